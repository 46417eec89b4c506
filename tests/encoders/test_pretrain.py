"""ERNIE's alignment pre-training (dEA): it learns, trains the fusion alone, and a fine-tuning run
starts from exactly what it saved, on the same entity table only."""

from pathlib import Path

import pytest
import torch

from encoders.data import Example, read_examples, read_texts
from encoders.knowledge import KnowledgeSource, knowledge_for
from encoders.model import EncoderConfig, KnowledgeEncoder
from encoders.pretrain import PretrainConfig, _corrupt, pretrain, save_fusion
from kg.errors import KGFormatError, KGPipeError

FIX = Path(__file__).parents[1] / "fixtures" / "encoders"


@pytest.fixture(scope="module")
def ernie() -> KnowledgeSource:
    return knowledge_for("ernie")


@pytest.fixture(scope="module")
def texts() -> list[Example]:
    """The fixture sentences as unlabelled texts, with their entity spans (QIDs of the bundled KG)."""
    out = []
    for task in ("relation", "typing"):
        for ex in read_examples(FIX / f"{task}_train.jsonl", task):
            out.append(Example(ex.text, [], (), ex.entities, ex.id))
    return out


def fresh(source: KnowledgeSource, fusion: Path | None = None) -> KnowledgeEncoder:
    return KnowledgeEncoder.create(
        EncoderConfig("relation", "ernie", ["a", "b"]), source, seed=0, fusion=fusion
    )


def pretrained(source: KnowledgeSource, texts: list[Example], folder: Path) -> KnowledgeEncoder:
    """A fresh model after one quick dEA pass over `texts`, its fusion saved into `folder`."""
    model = fresh(source)
    result = pretrain(model, texts, PretrainConfig(epochs=1, batch_size=8, progress=False))
    save_fusion(model, folder, PretrainConfig(), result)
    return model


def test_corruption_hides_and_replaces_the_right_shares() -> None:
    rows = torch.arange(100_000).reshape(1000, 100) % 500
    rows[:, -10:] = -1  # padding stays padding
    pool = torch.tensor([7, 8])
    out = _corrupt(rows, PretrainConfig(), pool, torch.Generator().manual_seed(0))
    live = rows >= 0
    hidden = (out[live] == -1).float().mean().item()
    swapped = ((out[live] != rows[live]) & (out[live] >= 7) & (out[live] <= 8)).float().mean().item()
    assert abs(hidden - 0.15) < 0.01 and abs(swapped - 0.05) < 0.01
    assert bool((out[~live] == -1).all())
    # a replacement is always another entity, even from a pool of two
    pair = torch.tensor([3, 4])
    rows = torch.full((200, 50), 3)
    out = _corrupt(rows, PretrainConfig(hide=0.0, replace=1.0), pair, torch.Generator().manual_seed(1))
    assert bool((out == 4).all())


def test_dea_learns_and_trains_the_fusion_alone(ernie: KnowledgeSource, texts: list[Example]) -> None:
    model = fresh(ernie)
    base = {k: v.clone() for k, v in model.base.state_dict().items()}
    fusion = {k: v.clone() for k, v in model.fusion.state_dict().items()}  # type: ignore[union-attr]
    result = pretrain(model, texts, PretrainConfig(epochs=4, batch_size=8, lr=3e-3, progress=False))
    assert result.texts == len(texts) and result.alignments > len(texts)
    assert result.loss[-1] < result.loss[0]
    assert result.accuracy[-1] > result.accuracy[0]
    assert all(torch.equal(v, base[k]) for k, v in model.base.state_dict().items())  # text model frozen
    after = model.fusion.state_dict()  # type: ignore[union-attr]
    assert not torch.equal(after["aggregators.0.token_out.weight"], fusion["aggregators.0.token_out.weight"])
    assert torch.equal(after["vectors.weight"], fusion["vectors.weight"])  # TransE stays
    assert torch.equal(after["focus_project.0.weight"], fusion["focus_project.0.weight"])  # not dEA's
    assert all(p.requires_grad for p in model.base.parameters())  # fine-tuning trains it again


def test_fine_tuning_starts_from_the_saved_fusion(
    ernie: KnowledgeSource, texts: list[Example], tmp_path: Path
) -> None:
    model = pretrained(ernie, texts[:16], tmp_path / "dea")
    again = fresh(ernie, tmp_path / "dea")
    mine, theirs = model.fusion.state_dict(), again.fusion.state_dict()  # type: ignore[union-attr]
    for key in mine:
        if key.startswith(("project.", "aggregators.")):
            assert torch.equal(mine[key], theirs[key]), key
    assert again.cfg.pretrained == str(tmp_path / "dea")
    # another entity table: refused with the fix
    other = KnowledgeSource(ernie.qids, ernie.vectors + 1.0)
    with pytest.raises(KGFormatError, match=r"another entity vector table.*same --transe"):
        fresh(other, tmp_path / "dea")
    with pytest.raises(ValueError, match="knowledge='ernie'"):
        KnowledgeEncoder.create(
            EncoderConfig("relation", "none", ["a"]), KnowledgeSource.empty(), fusion=tmp_path / "dea"
        )
    with pytest.raises(KGFormatError, match="kgpipe encoder pretrain"):
        fresh(ernie, tmp_path)


def test_a_fusion_fits_only_its_text_model_and_a_damaged_one_is_named(
    ernie: KnowledgeSource, texts: list[Example], tmp_path: Path
) -> None:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from encoders.text import default_model_path

    pretrained(ernie, texts[:8], tmp_path / "dea")
    # the same architecture with other weights: same hidden size and layers, another model
    torch.manual_seed(1)
    AutoModel.from_config(AutoConfig.from_pretrained(default_model_path())).save_pretrained(
        tmp_path / "other"
    )
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(tmp_path / "other")
    cfg = EncoderConfig("relation", "ernie", ["a", "b"])
    with pytest.raises(KGFormatError, match="another text model"):
        KnowledgeEncoder.create(cfg, ernie, tmp_path / "other", fusion=tmp_path / "dea")
    (tmp_path / "dea" / "pretrain.json").write_text('{"format": "kgpipe-fusion/1",')
    with pytest.raises(KGFormatError, match=r"pretrain\.json:1: invalid JSON"):
        fresh(ernie, tmp_path / "dea")


def test_texts_without_entities_are_refused_with_the_fix(ernie: KnowledgeSource) -> None:
    with pytest.raises(KGPipeError, match="link them to the KG first"):
        pretrain(fresh(ernie), [Example("Nothing here.", [])], PretrainConfig(progress=False))


def test_read_texts_names_file_line_and_fix(tmp_path: Path) -> None:
    good = tmp_path / "t.jsonl"
    good.write_text(
        '{"text": "Paris is big."}\n{"text": "Rome", "entities": [{"span": [0, 4], "id": "Q220"}]}\n'
    )
    got = read_texts(good)
    assert [len(ex.entities) for ex in got] == [0, 1] and got[1].entities[0].qid == "Q220"
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "Rome"}\n{"text": "Rome", "entities": [{"span": [0, 9]}]}\n')
    with pytest.raises(KGFormatError, match=r"b\.jsonl:2.*not inside the text"):
        read_texts(bad)

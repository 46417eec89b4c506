"""K-BERT-style injection (Liu et al. 2020): KG triples grafted onto a sentence as branches.

Each linked entity's triples, as word pieces, are inserted right after its last piece. Soft
positions keep the sentence's own numbering (a branch continues from its entity), and a visible
matrix lets branch pieces see only their own branch and their entity, so the sentence reads as
before. Works on word-piece ids, so any tokenizer and any language.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SentenceTree:
    """One sentence with its branches, flattened.

    ids: the word pieces, [CLS] sentence-with-branches [SEP]; positions: soft position ids;
    visible: bool[len, len], row i may attend to column j; main: index of each sentence piece
    (and [CLS], [SEP]) in `ids`, in sentence order.
    """

    ids: list[int]
    positions: list[int]
    visible: torch.Tensor
    main: list[int]


def build_tree(
    pieces: list[int],
    entities: list[tuple[int, int, list[list[int]]]],
    cls_id: int,
    sep_id: int,
) -> SentenceTree:
    """pieces: the sentence's word-piece ids, no special tokens; entities: (first, last, branches)
    with piece indices into `pieces` and each branch a list of piece ids."""
    grafts: dict[int, list[tuple[int, int, list[int]]]] = {}
    for first, last, branches in entities:
        for branch in branches:
            grafts.setdefault(last, []).append((first, last, branch))

    ids, positions, main = [cls_id], [0], [0]
    groups: list[tuple[list[int], list[int]]] = []  # (branch slots, entity slots in sentence order)
    for i, piece in enumerate(pieces):
        main.append(len(ids))
        ids.append(piece)
        positions.append(i + 1)
        for first, last, branch in grafts.get(i, []):
            start = len(ids)
            ids.extend(branch)
            positions.extend(range(last + 2, last + 2 + len(branch)))
            groups.append((list(range(start, len(ids))), list(range(first + 1, last + 2))))
    main.append(len(ids))
    ids.append(sep_id)
    positions.append(len(pieces) + 1)

    visible = torch.zeros(len(ids), len(ids), dtype=torch.bool)
    trunk = torch.tensor(main)
    visible[trunk.unsqueeze(1), trunk.unsqueeze(0)] = True
    for slots, entity in groups:
        b = torch.tensor(slots)
        e = torch.tensor([main[k] for k in entity])
        visible[b.unsqueeze(1), b.unsqueeze(0)] = True
        visible[b.unsqueeze(1), e.unsqueeze(0)] = True
        visible[e.unsqueeze(1), b.unsqueeze(0)] = True
    return SentenceTree(ids, positions, visible, main)


def visible_to_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool[batch, len, len] → the additive float[batch, 1, len, len] mask HF attention takes as is."""
    mask = torch.zeros(visible.shape, dtype=dtype)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask.unsqueeze(1)

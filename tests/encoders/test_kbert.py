"""K-BERT's sentence tree: branches follow their entity, soft positions, and who sees whom."""

import torch

from encoders.kbert import build_tree, visible_to_mask

CLS, SEP = 101, 102


def test_branches_graft_after_the_entity_with_soft_positions() -> None:
    # sentence pieces 10 11 12 13; entity = pieces 1..2; one branch of two pieces
    tree = build_tree([10, 11, 12, 13], [(1, 2, [[50, 51]])], CLS, SEP)
    assert tree.ids == [CLS, 10, 11, 12, 50, 51, 13, SEP]
    # the branch continues from the entity's end; the sentence keeps its own numbering
    assert tree.positions == [0, 1, 2, 3, 4, 5, 4, 5]
    assert tree.main == [0, 1, 2, 3, 6, 7]


def test_visible_matrix_keeps_branches_to_their_entity() -> None:
    tree = build_tree([10, 11, 12, 13], [(1, 2, [[50, 51]]), (3, 3, [[60]])], CLS, SEP)
    v = tree.visible
    branch, entity, other = [4, 5], [2, 3], [0, 1, 6, 8]
    assert tree.ids[7] == 60 and tree.ids[6] == 13
    for b in branch:
        assert all(v[b, e] and v[e, b] for e in entity)
        assert not any(v[b, o] or v[o, b] for o in other)
        assert not v[b, 7] and not v[7, b]  # the other entity's branch
    main = tree.main
    assert bool(v[main][:, main].all())  # the sentence sees itself whole, as without knowledge


def test_no_entities_is_the_plain_sentence() -> None:
    tree = build_tree([10, 11], [], CLS, SEP)
    assert tree.ids == [CLS, 10, 11, SEP] and tree.positions == [0, 1, 2, 3]
    assert bool(tree.visible.all())


def test_mask_is_additive_and_four_dimensional() -> None:
    visible = torch.tensor([[[True, False], [True, True]]])
    mask = visible_to_mask(visible, torch.float32)
    assert mask.shape == (1, 1, 2, 2)
    assert mask[0, 0, 0, 0] == 0 and mask[0, 0, 0, 1] == torch.finfo(torch.float32).min

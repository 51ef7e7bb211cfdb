"""The pieces of `--shard-classes` that need no process group: the class split, a shard's
initial rows (the same rows as one process's modules, same generator state after), the
cross entropy's single-shard path, and the margin heads' "class held elsewhere" label."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facecl.losses import create_center_loss, create_head
from facecl.losses.distributed import ClassRange, class_range
from facecl.losses.shard_init import shard_center_loss, shard_head
from facecl.losses.sharded import sharded_cross_entropy

C, D = 37, 6


@pytest.mark.parametrize("classes, world", [(37, 4), (8, 8), (10, 3), (1_000_003, 7)])
def test_class_ranges_are_contiguous_and_even(classes, world):
    ranges = [class_range(classes, r, world) for r in range(world)]
    assert ranges[0].lo == 0 and ranges[-1].hi == classes
    assert all(a.hi == b.lo for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [r.size for r in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        class_range(classes, world, world)


def test_local_labels():
    own, local = ClassRange(3, 6, 10).local_labels(torch.tensor([0, 3, 5, 6, 9]))
    assert own.tolist() == [False, True, True, False, False]
    assert local.tolist() == [-1, 0, 2, -1, -1]


CASES = [
    ("softmax", {}, "cl", {}),
    ("softmax", {"bias": False}, "cil", {}),
    ("arcface", {}, "acl", {}),
    ("sphereface", {}, "cl", {"center_init": "gaussian"}),
    ("cosface", {}, "acl-gamma", {"center_init": "zeros"}),
]


@pytest.mark.parametrize("head_name, head_kw, loss_name, loss_kw", CASES)
def test_shard_rows_are_one_process_rows(head_name, head_kw, loss_name, loss_kw):
    counts = torch.arange(1, C + 1, dtype=torch.float32)
    torch.manual_seed(3)
    head = create_head(head_name, D, C, **head_kw)
    center = create_center_loss(loss_name, C, D, class_counts=counts, **loss_kw)
    after = torch.rand(4)  # where one process leaves the generator
    for world in (2, 4):
        for rank in range(world):
            shard = class_range(C, rank, world)
            torch.manual_seed(3)
            h = shard_head(head_name, D, shard, **head_kw)
            c = shard_center_loss(loss_name, D, shard, center.config, counts)
            assert torch.equal(torch.rand(4), after)
            assert h.class_range == shard == c.class_range and c.num_classes == shard.size
            for key, value in head.state_dict().items():
                assert torch.equal(h.state_dict()[key], value[shard.lo : shard.hi]), key
            for key, value in center.state_dict().items():
                want = value[shard.lo : shard.hi] if key in center.class_rows else value
                assert torch.equal(c.state_dict()[key], want), key


def test_one_shard_cross_entropy_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(9, 5, generator=g, dtype=torch.float64) * 8).requires_grad_()
    y = torch.randint(0, 5, (9,), generator=g)
    ours = sharded_cross_entropy(logits, y, ClassRange.full(5))
    (g_ours,) = torch.autograd.grad(ours, logits)
    ref = F.cross_entropy(logits.float(), y)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert abs(ours.item() - ref.item()) < 1e-5
    assert torch.allclose(g_ours, g_ref, atol=1e-6)


def test_margin_head_leaves_labels_of_other_shards_alone():
    torch.manual_seed(0)
    head = create_head("arcface", D, 5)
    x = torch.randn(4, D)
    y = torch.tensor([1, -1, 3, -1])
    out = head(x, y)
    plain = head(x, None)
    full = head(x, torch.tensor([1, 0, 3, 0]))
    assert torch.equal(out[[1, 3]], plain[[1, 3]])  # no margin anywhere on those rows
    assert torch.equal(out[[0, 2]], full[[0, 2]])  # the owned targets get theirs
    assert not torch.equal(out[0], plain[0])

"""Mask patterns against their references, on identical tensors.

- n:m: NVIDIA/apex, commit 0441afdeb2f4140a9fe1820caf8077a76987bcbb,
  `apex/contrib/sparsity/sparse_masklib.py`: `create_mask(tensor, "m4n2_1d")` with
  `mn_1d_best` / `compute_valid_1d_patterns` (ported below op for op), which for a conv
  weight groups along C_in at each kernel position (permute(2, 3, 0, 1)); and the layout
  `torch.sparse.to_sparse_semi_structured` needs, checked on the CPU by torch's own CUTLASS
  conversion (`torch.sparse._semi_structured_conversions`): the compressed values and metadata
  round-trip to exactly the masked matrix. No GPU here: the real `to_sparse_semi_structured`
  call and a 2:4 matmul timing need one (see benchmarks/RESULTS.md).
- block: `torch.ao.pruning.WeightNormSparsifier._make_tensor_mask` (torch's own code, called
  directly), which scores a block by the mean of w^2 (avg_pool2d, ceil_mode).
"""

from __future__ import annotations

from itertools import permutations

import pytest
import torch
from knobs import read_by
from torch import nn

from trainables.sparsity import create_sparse_training
from trainables.sparsity.masks import Pattern, topk_mask

# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- apex m4n2_1d, ported -------------------------------------------------------------------
def apex_valid_1d_patterns(m, n):
    patterns = torch.zeros(m)
    patterns[:n] = 1
    return torch.Tensor(list(set(permutations(patterns.tolist()))))


def apex_mn_1d_best(matrix, m, n):
    patterns = apex_valid_1d_patterns(m, n)
    mask = torch.ones_like(matrix, dtype=torch.int32).view(-1, m)
    mat = matrix.view(-1, m)  # reshape_1d: the shapes here are multiples of m
    pmax = torch.argmax(torch.matmul(mat.abs(), patterns.t()), dim=1)
    mask[:] = patterns[pmax[:]]
    return mask.view(matrix.shape)


def apex_create_mask(tensor, m=4, n=2):
    shape = tensor.shape
    t = tensor.float().contiguous()
    if len(shape) == 2:
        return apex_mn_1d_best(t.view(shape[0], shape[1]), m, n).view(shape).bool()
    t = t.permute(2, 3, 0, 1).contiguous().view(shape[2] * shape[3] * shape[0], shape[1])
    mask = apex_mn_1d_best(t, m, n)
    mask = mask.view(shape[2], shape[3], shape[0], shape[1]).permute(2, 3, 0, 1).contiguous()
    return mask.view(shape).bool()


TWO_FOUR = Pattern("n:m", n=2, m=4)


@pytest.mark.parametrize("shape", [(8, 8, 3, 3), (16, 12, 3, 3), (6, 4, 1, 1), (12, 32), (10, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_n_m_mask_equals_apex_m4n2_1d(shape, seed):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    expected = apex_create_mask(weight)
    got = topk_mask(weight.abs(), 0, TWO_FOUR)
    assert torch.equal(got, expected)


def semi_structured_round_trip(dense: torch.Tensor) -> torch.Tensor:
    from torch.sparse._semi_structured_conversions import (
        sparse_semi_structured_from_dense_cutlass,
        sparse_semi_structured_to_dense_cutlass,
    )

    values, meta = sparse_semi_structured_from_dense_cutlass(dense)
    return sparse_semi_structured_to_dense_cutlass(values, meta)


def gemm_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The matrix a 2:4 kernel multiplies: a linear weight, or a conv weight channels last
    (C_out x (kh * kw * C_in)), as to_sparse_semi_structured takes it."""
    if weight.dim() == 4:
        weight = weight.permute(0, 2, 3, 1)
    return weight.reshape(weight.shape[0], -1)


@pytest.mark.parametrize(
    ("layer", "input_shape"),
    [(nn.Conv2d(64, 32, 3, bias=False), (64, 6, 6)), (nn.Linear(128, 64, bias=False), (128,))],
    ids=["conv", "linear"],
)
@pytest.mark.parametrize("method", ["static", "rigl"])
def test_two_four_masks_are_accepted_by_the_semi_structured_layout(layer, input_shape, method):
    model = nn.Sequential(layer)
    training = create_sparse_training(
        model, method=method, sparsity=0.5, pattern="n:m", nm_n=2, nm_m=4, total_steps=100,
        generator=torch.Generator().manual_seed(0),
        **read_by(method, update_interval=1, update_end=1.0),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):  # masks after updates, too
        optimizer.zero_grad()
        model(torch.randn(2, *input_shape)).square().sum().backward()
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
    weight = training.weights["0.weight"].detach()
    mask = training.masks["0.weight"]
    matrix = gemm_matrix(weight * mask + mask * 1e-3).half()  # no accidental zeros
    assert matrix.shape[0] % 32 == 0 and matrix.shape[1] % 64 == 0  # CUTLASS fp16 minimums
    assert (matrix.reshape(-1, 4) != 0).sum(dim=1).eq(2).all()
    assert torch.equal(semi_structured_round_trip(matrix), matrix)


def test_flattened_row_groups_are_not_accepted():
    """The layout before the fix (groups of 4 of the flattened C_in x kh x kw row) is not 2:4
    along the input channels: the round trip loses values."""
    weight = torch.randn(32, 64, 3, 3, generator=torch.Generator().manual_seed(0))
    flat = weight.reshape(32, -1)
    keep = torch.zeros_like(flat, dtype=torch.bool).view(-1, 4)
    keep.scatter_(1, flat.abs().view(-1, 4).topk(2, dim=1).indices, True)
    old = keep.view(weight.shape)
    matrix = gemm_matrix(weight * old).half()
    assert not torch.equal(semi_structured_round_trip(matrix), matrix)


# --- block: torch.ao's WeightNormSparsifier ---------------------------------------------------
def torch_ao_block_mask(score_matrix, sparsity_level, block):
    from torch.ao.pruning import WeightNormSparsifier

    sparsifier = WeightNormSparsifier(sparse_block_shape=(block, block))
    data = score_matrix.float() ** 2  # norm=2: norm_fn is T * T
    mask = sparsifier._make_tensor_mask(
        data=data, input_shape=data.shape, sparsity_level=sparsity_level,
        sparse_block_shape=(block, block),
    )  # fmt: skip
    return mask.bool()


@pytest.mark.parametrize("shape", [(10, 100), (10, 16), (13, 30), (8, 3, 3, 3), (12, 5, 3, 3)])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_block_mask_equals_torch_ao_weight_norm_sparsifier(shape, sparsity):
    """Edge tiles that are cut short compete on their mean, as in torch.ao (a conv weight as
    its C_out x C_in*kh*kw matrix)."""
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    pattern = Pattern("block", block_size=4)
    matrix = weight.reshape(shape[0], -1)
    expected = torch_ao_block_mask(matrix.abs(), sparsity, 4)
    n_blocks = pattern.n_units(tuple(shape))
    n_zero = max(0, min(n_blocks - 1, round(sparsity * n_blocks)))
    got = topk_mask(weight.abs(), n_blocks - n_zero, pattern).reshape(shape[0], -1)
    assert torch.equal(got, expected)


def test_ten_class_output_layer_keeps_its_last_classes():
    """4x4 blocks of a 10 x 100 layer: rows 8-9 form half-height tiles. Scored by the L2 norm
    they always lost; by the mean of w^2 they compete equally."""
    weight = torch.randn(10, 100, generator=torch.Generator().manual_seed(0))
    mask = topk_mask(weight.abs(), 25, Pattern("block", block_size=4))  # keep 25 of 75 tiles
    assert mask[8:].any()

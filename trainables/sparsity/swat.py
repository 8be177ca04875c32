"""SWAT: Sparse Weight Activation Training (Raihan & Aamodt, NeurIPS 2020).

Every prunable layer runs through `SwatLinear` / `SwatConv2d` (torch.autograd.Function):

- forward: output = x * topK(W) (the top-K weights by magnitude of the layer; x dense);
- backward: input gradient through the same top-K weights; weight gradient from the top-K
  input activations (by magnitude, over the layer's whole mini-batch input) that the forward
  saved, and *dense*: every weight, active or not, receives it, so dropped weights can return.

As the authors' code (AamirRaihan/SWAT, `SWAT-code/cifar10-100-code/custom_layers/`,
`topk/drop.py`, `dynamic_sparsity.py`):

- each layer keeps K = ceil(density_l * numel) weights and ceil(density_l * numel) input
  activations, by threshold (|x| >= the K-th largest |x|, drop.py's matrix_drop /
  drop_nhwc), where density_l is that layer's density: uniform for SWAT-U, the layer's ERK
  density for SWAT-ERK (weights *and* activations);
- `topk_period`: convolutions recompute the exact top-K every `topk_period` steps and reuse
  each layer's weight and activation threshold in between; linear layers always take the exact
  top-K (custom_linear.py has no threshold reuse).

Where it differs from the authors' code: no `warmup` epochs of exact top-K before the reuse
starts (the reuse starts at once); `dense_first_last` keeps the first and last layer dense in
weights and activations, where the reference's erdos_renyi_kernel overwrites its
sparsify_first/last_layer choice with an ERK density; the K-th largest value is found by
selection (`masks.kth_largest`) rather than a sort, the same threshold.

Cost (CPU, float32/64; every step top-Ks every linear layer's weights and activations): the
selection is numpy's introselect on the magnitudes' bit patterns, in place in buffers reused
per layer; W * mask and x * mask are one fused pass each (`hardshrink` just below the
threshold, `_keep_at_least`); the mask is numpy's compare into the bool mask; the active
counts for the FLOPs come from the selection. Same masks, tensors and counts as the plain ops
(tests/test_swat_fast_path.py); elsewhere (GPU, half precision) the plain ops run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

from trainables.flops import swat_step_flops
from trainables.sparsity.engine import SparseTraining
from trainables.sparsity.masks import kth_largest, prunable_layers, topk_mask


class SwatLinear(torch.autograd.Function):
    """y = x W_S^T + b; grad_x = grad_y W_S; grad_W = grad_y^T A_S (dense); A_S: sparse x.

    `sparse_weight` is W masked (W_S, no graph); the weight gradient goes to `weight`. No
    input gradient where the input needs none (the first layer), as autograd would skip it."""

    @staticmethod
    def forward(ctx, x, weight, bias, sparse_weight, x_sparse):
        ctx.save_for_backward(x_sparse, sparse_weight)
        ctx.has_bias = bias is not None
        return F.linear(x, sparse_weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x_sparse, sparse_weight = ctx.saved_tensors
        grad_x = grad_out.matmul(sparse_weight) if ctx.needs_input_grad[0] else None
        out_features = grad_out.shape[-1]
        grad_w = (
            grad_out.reshape(-1, out_features).t().matmul(x_sparse.reshape(-1, x_sparse.shape[-1]))
        )
        grad_b = grad_out.reshape(-1, out_features).sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None, None


class SwatConv2d(torch.autograd.Function):
    """The convolution analogue of `SwatLinear` (input and weight gradients by torch.nn.grad)."""

    @staticmethod
    def forward(ctx, x, weight, bias, sparse_weight, x_sparse, stride, padding, dilation, groups):
        ctx.save_for_backward(x_sparse, sparse_weight)
        ctx.conf = (x.shape, stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, sparse_weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x_sparse, sparse_weight = ctx.saved_tensors
        x_shape, stride, padding, dilation, groups, has_bias = ctx.conf
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d_input(
                x_shape, sparse_weight, grad_out, stride, padding, dilation, groups
            )
        grad_w = conv2d_weight(
            x_sparse, sparse_weight.shape, grad_out, stride, padding, dilation, groups
        )
        grad_b = grad_out.sum(dim=(0, 2, 3)) if has_bias else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def swat_keep_count(density: float, numel: int) -> int:
    """drop.py's k = int(ceil(select_percentage * numel))."""
    return max(1, min(numel, math.ceil(density * numel)))


def topk_activations(x: Tensor, density: float) -> tuple[Tensor, Tensor]:
    """(threshold, sparse x) as drop.py's drop_nhwc_send_th: threshold = the K-th largest |x|,
    K = ceil(density * numel); every |x| >= threshold is kept (zeros stay zero)."""
    threshold, x_sparse, _ = topk_activations_counted(x, density)
    return threshold, x_sparse


def topk_activations_counted(
    x: Tensor, density: float, scratch: Tensor | None = None
) -> tuple[Tensor, Tensor, int | None]:
    """`topk_activations` and, where known for free, the number of non-zeros it kept (else
    None). On a CPU (float32/64) |x| goes into `scratch` (x's shape and dtype, contiguous;
    reused between calls: no fresh large allocation per forward) and is partitioned there in
    place, and the mask is one fused pass (`_keep_at_least`)."""
    x = x.detach()
    k = swat_keep_count(density, x.numel())
    if not _fast_path(x):
        magnitude = x.abs()
        threshold = kth_largest(magnitude, k)
        return threshold, x.masked_fill(magnitude < threshold, 0.0), None
    if scratch is None or scratch.shape != x.shape or scratch.dtype != x.dtype:
        scratch = torch.empty(x.shape, dtype=x.dtype)
    torch.abs(x, out=scratch)
    threshold, kept = _select_in_place(scratch.reshape(-1).numpy(), k)
    if not threshold > 0:  # 0 (or NaN): everything is kept (the masked_fill's copy of x)
        return torch.tensor(threshold, dtype=x.dtype), x.clone(), None
    return torch.tensor(threshold, dtype=x.dtype), _keep_at_least(x, threshold), kept


def sparse_activations(x: Tensor, threshold: Tensor) -> Tensor:
    x = x.detach()
    if _fast_path(x) and threshold.item() > 0:
        return _keep_at_least(x, threshold.item())
    return x.masked_fill(x.abs() < threshold, 0.0)


def _fast_path(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _select_in_place(flat: np.ndarray, k: int) -> tuple[float, int]:
    """(the k-th largest of `flat`, how many are >= it) for magnitudes (>= 0, float32/64),
    partitioning `flat` in place: numpy's introselect as `masks.kth_largest`, without its copy,
    and on the bits: a non-negative float orders as its bit pattern read as a signed integer
    (NaN, sign cleared by abs, above inf, where numpy puts it), and integer selection is ~2.5x
    the float one. The count comes from the partition: k, plus the ties left of the boundary
    (only looked for when the left part reaches the boundary)."""
    n = flat.size
    bits = np.ascontiguousarray(flat).view(np.int32 if flat.dtype == np.float32 else np.int64)
    bits.partition(n - k)
    boundary = bits[n - k]
    left = bits[: n - k]
    kept = k
    if left.size and left.max() >= boundary:
        kept += int(np.count_nonzero(left == boundary))
    return float(bits[n - k : n - k + 1].view(flat.dtype)[0]), kept


def _keep_at_least(x: Tensor, threshold: float) -> Tensor:
    """x where |x| >= threshold, else 0 (threshold > 0): x.masked_fill(x.abs() < threshold, 0)
    bit for bit, as one vectorized pass instead of three (abs, compare, masked fill; about 20x
    faster on a CPU). hardshrink keeps |x| > lambd; lambd is the largest value of x's dtype
    below the threshold, so |x| > lambd is |x| >= threshold exactly (NaN is kept by both)."""
    t = torch.tensor(threshold, dtype=x.dtype)
    below = torch.nextafter(t, torch.zeros((), dtype=x.dtype)).item()
    return F.hardshrink(x, below)


class SwatTraining(SparseTraining):
    """SWAT's top-K masks and the wrapped forward of every prunable layer."""

    def __init__(
        self,
        method,
        model: nn.Module,
        weights: dict[str, nn.Parameter],
        densities: dict[str, float],
        *,
        topk_period: int,
        **common: Any,
    ) -> None:
        pattern = common["pattern"]
        self.densities = densities
        self.n_keep = {
            name: swat_keep_count(densities[name], pattern.n_units(tuple(w.shape)))
            if pattern.kind == "unstructured"
            else max(1, round(densities[name] * pattern.n_units(tuple(w.shape))))
            for name, w in weights.items()
        }
        self.is_conv = {
            name: isinstance(module, nn.Conv2d) for name, module in prunable_layers(model).items()
        }
        masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        # name -> active weights, known from the top-K's selection (no count over the mask);
        # kept across SWAT's own per-step mask changes, dropped by `masks_changed()`.
        self._weight_nnz: dict[str, int] = {}
        # name -> reused buffers of the per-step selections (see _weight_scratch)
        self._scratch: dict[str, tuple[Tensor, np.ndarray]] = {}
        self._activation_scratch: dict[str, Tensor] = {}
        super().__init__(method, weights, masks, **common)
        self.topk_period = topk_period
        self.weight_thresholds: dict[str, Tensor] = {}
        # name -> ((weight version, mask version, mask id), W * mask), see sparse_weight
        self._sparse_weights: dict[str, tuple[tuple[int, int, int], Tensor]] = {}
        self.activation_thresholds: dict[str, Tensor] = {}
        # The reference top-Ks each layer's activations at that layer's own density (SWAT-ERK:
        # its ERK density), not at the global 1 - sparsity.
        self.target_activation_density = {
            name: 1.0 if densities[name] >= 1.0 else densities[name] for name in weights
        }
        # The activation density the last training forward kept, per layer (for FLOPs).
        self.activation_density = dict(self.target_activation_density)
        self._next_step = 0  # the step whose forward comes next
        self._forwards: dict[str, int] = dict.fromkeys(weights, 0)
        self.recompute_masks()
        for name, module in prunable_layers(model).items():
            self._wrap(name, module)

    # --- masks ---------------------------------------------------------------------
    @torch.no_grad()
    def recompute_masks(self, names: list[str] | None = None) -> None:
        """Exact top-K of the layers `names` (default all); remembers each threshold for reuse."""
        counts: dict[str, int | None] = {}
        for name in self.weights if names is None else names:
            if self.densities[name] >= 1.0:
                continue
            weight = self.weights[name].detach()
            if self.pattern.kind == "unstructured" and _fast_path(weight):
                magnitude, work = self._weight_scratch(name, weight)
                torch.abs(weight, out=magnitude)
                np.copyto(work, magnitude.reshape(-1).numpy())
                value, kept = _select_in_place(work, self.n_keep[name])
                threshold = torch.tensor(value, dtype=weight.dtype)
                counts[name] = self._mask_at(name, magnitude, threshold, kept)
                self.weight_thresholds[name] = threshold
                continue
            magnitude = weight.abs()
            if self.pattern.kind == "unstructured":
                threshold = kth_largest(magnitude, self.n_keep[name])
                torch.ge(magnitude, threshold, out=self.masks[name])  # references stay valid
                counts[name] = None
            else:
                mask = topk_mask(magnitude, self.n_keep[name], self.pattern)
                self.masks[name].copy_(mask)
                threshold = magnitude.masked_fill(~mask, torch.inf).min()
                counts[name] = None
            self.weight_thresholds[name] = threshold
        self._masks_updated(counts)

    def _weight_scratch(self, name: str, weight: Tensor) -> tuple[Tensor, np.ndarray]:
        """|W| and a copy of it to partition, allocated once per layer (the top-K runs every
        step: fresh ~1 MB buffers each time cost page faults on a CPU)."""
        scratch = self._scratch.get(name)
        if scratch is None or scratch[0].dtype != weight.dtype:
            magnitude = torch.empty(weight.shape, dtype=weight.dtype)
            scratch = (magnitude, np.empty(weight.numel(), dtype=magnitude.numpy().dtype))
            self._scratch[name] = scratch
        return scratch

    def _mask_at(self, name: str, magnitude: Tensor, threshold: Tensor, kept: int | None):
        """mask = |W| >= threshold in place, and W * mask made now for the next forward (one
        fused pass, `_keep_at_least`). Returns the active count where `kept` knows it."""
        mask = self.masks[name]
        if mask.is_contiguous() and magnitude.is_contiguous():
            # numpy's compare into the bool mask is ~10x torch.ge's on a CPU (in place:
            # references stay valid; the version bump tells caches keyed on it)
            np.greater_equal(magnitude.numpy(), threshold.numpy(), out=mask.numpy())
            torch.autograd.graph.increment_version(mask)
        else:
            torch.ge(magnitude, threshold, out=mask)
        value = threshold.item()
        if not value > 0:  # zero (or NaN): sparse_weight builds W * mask from the mask
            return None
        weight = self.weights[name]
        key = (weight._version, mask._version, id(mask))
        self._sparse_weights[name] = (key, _keep_at_least(weight.detach(), value))
        return kept

    def _masks_updated(self, counts: dict[str, int | None]) -> None:
        """SWAT's own mask changes: the FLOP cache is dropped, the known counts kept."""
        super().masks_changed()
        for name, count in counts.items():
            if count is None:
                self._weight_nnz.pop(name, None)
            else:
                self._weight_nnz[name] = count

    def masks_changed(self) -> None:
        super().masks_changed()
        self._weight_nnz.clear()

    def layer_nnz(self) -> dict[str, int]:
        """As SparseTraining's, counting only the masks whose count the top-K did not give."""
        if self._nnz_cache is None:
            for name, mask in self.masks.items():
                if name not in self._weight_nnz:
                    self._weight_nnz[name] = int(mask.sum())
            self._nnz_cache = dict(self._weight_nnz)
        return self._nnz_cache

    @torch.no_grad()
    def sparse_weight(self, name: str) -> Tensor:
        """W * mask for the forward (no graph), made once per (weight, mask) version: the
        weights and masks change after the optimizer step and stay until the next forward."""
        weight, mask = self.weights[name], self.masks[name]
        key = (weight._version, mask._version, id(mask))
        cached = self._sparse_weights.get(name)
        if cached is None or cached[0] != key:
            cached = (key, weight.detach().masked_fill(~mask, 0.0))
            self._sparse_weights[name] = cached
        return cached[1]

    @torch.no_grad()
    def after_step(self) -> None:
        """Dense weights stay; the top-K follows them: exact every topk_period steps; in
        between, convolutions reuse their last threshold (unstructured) or mask, linear layers
        stay exact."""
        if self._next_step % self.topk_period == 0:
            self.recompute_masks()
            return
        self.recompute_masks([name for name in self.weights if not self.is_conv[name]])
        if self.pattern.kind == "unstructured":
            counts: dict[str, int | None] = {}
            for name, threshold in self.weight_thresholds.items():
                if self.is_conv[name]:
                    weight = self.weights[name].detach()
                    if _fast_path(weight):
                        counts[name] = self._mask_at(name, weight.abs(), threshold, None)
                    else:
                        self.masks[name].copy_(weight.abs() >= threshold)
                        counts[name] = None
            self._masks_updated(counts)

    @torch.no_grad()
    def after_backward(self, step: int, optimizer: torch.optim.Optimizer) -> bool:
        """The weight gradient is dense by design: nothing is masked, nothing skipped."""
        self._next_step = step + 1
        return False

    def dense_gradient_step(self, step: int) -> bool:
        return False

    def step_flops(self, step: int) -> int:
        """Per layer f_l (2 (1 - s_W) + (1 - s_A)) from this step's masks and the
        activations its forward really kept."""
        dense = self.dense_layer_flops()
        nnz = self.layer_nnz()
        weight_density = {n: nnz[n] / m.numel() for n, m in self.masks.items()}
        return round(swat_step_flops(dense, weight_density, self.activation_density))

    # --- the wrapped forward -------------------------------------------------------
    def _wrap(self, name: str, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise ValueError(f"swat supports zero-padded convolutions only ({name})")
        training = self

        def forward(x: Tensor) -> Tensor:
            sparse_weight = training.sparse_weight(name)
            if not (module.training and torch.is_grad_enabled()):
                if isinstance(module, nn.Conv2d):
                    return module._conv_forward(x, sparse_weight, module.bias)
                return F.linear(x, sparse_weight, module.bias)
            x_sparse = training._sparse_input(name, x)
            if isinstance(module, nn.Conv2d):
                return SwatConv2d.apply(
                    x, module.weight, module.bias, sparse_weight, x_sparse, module.stride,
                    module.padding, module.dilation, module.groups,
                )  # fmt: skip
            return SwatLinear.apply(x, module.weight, module.bias, sparse_weight, x_sparse)

        module.forward = forward

    @torch.no_grad()
    def _sparse_input(self, name: str, x: Tensor) -> Tensor:
        density = self.target_activation_density[name]
        if density >= 1.0:
            self.activation_density[name] = 1.0
            return x.detach()
        calls = self._forwards[name]
        self._forwards[name] = calls + 1
        exact = not self.is_conv[name] or calls % self.topk_period == 0
        kept = None
        if exact or name not in self.activation_thresholds:
            scratch = self._activation_scratch.get(name)
            if _fast_path(x) and (
                scratch is None or scratch.shape != x.shape or scratch.dtype != x.dtype
            ):
                scratch = self._activation_scratch[name] = torch.empty(x.shape, dtype=x.dtype)
            threshold, x_sparse, kept = topk_activations_counted(x, density, scratch)
            self.activation_thresholds[name] = threshold
        else:
            x_sparse = sparse_activations(x, self.activation_thresholds[name])
        if kept is None:
            kept = int(torch.count_nonzero(x_sparse))
        self.activation_density[name] = kept / x.numel()
        return x_sparse

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["swat"] = {
            "next_step": self._next_step,
            "forwards": dict(self._forwards),
            "weight_thresholds": dict(self.weight_thresholds),
            "activation_thresholds": dict(self.activation_thresholds),
        }
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        swat = state["swat"]
        self._next_step = swat["next_step"]
        self._forwards = dict(swat["forwards"])
        self.weight_thresholds = dict(swat["weight_thresholds"])
        self.activation_thresholds = dict(swat["activation_thresholds"])
        super().load_state_dict(state)

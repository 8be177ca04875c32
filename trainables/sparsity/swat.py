"""SWAT: Sparse Weight Activation Training (Raihan & Aamodt, NeurIPS 2020).

Every prunable layer runs through `SwatLinear` / `SwatConv2d` (torch.autograd.Function):

- forward: output = x * topK(W) (the top-K weights by magnitude of the layer; x dense);
- backward: input gradient through the same top-K weights; weight gradient from the top-K
  input activations (by magnitude, over the layer's whole mini-batch input) that the forward
  saved, and *dense*: every weight, active or not, receives it, so dropped weights can return.

The dense weights are kept and updated; the masks (the top-K) are recomputed after every
optimizer step, or every `topk_period` steps, reusing each layer's weight and activation
threshold in between (the paper's top-K threshold reuse). `distribution` uniform is SWAT-U,
erk is SWAT-ERK (the weight densities; the activation density of every layer is
1 - sparsity, as in the paper's SWAT-U / SWAT-ERK, which keep the activation sparsity
uniform). Layers in `dense_first_last` stay dense in weights and activations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

from trainables.flops import swat_step_flops
from trainables.sparsity.masks import prunable_layers, topk_mask
from trainables.sparsity.methods import SparseTraining


class SwatLinear(torch.autograd.Function):
    """y = x W_S^T + b; grad_x = grad_y W_S; grad_W = grad_y^T A_S (dense); A_S: sparse x."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask, x_sparse):
        sparse_weight = weight * mask
        ctx.save_for_backward(x_sparse, sparse_weight)
        ctx.has_bias = bias is not None
        return F.linear(x, sparse_weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x_sparse, sparse_weight = ctx.saved_tensors
        grad_x = grad_out.matmul(sparse_weight)
        out_features = grad_out.shape[-1]
        grad_w = (
            grad_out.reshape(-1, out_features).t().matmul(x_sparse.reshape(-1, x_sparse.shape[-1]))
        )
        grad_b = grad_out.reshape(-1, out_features).sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None, None


class SwatConv2d(torch.autograd.Function):
    """The convolution analogue of `SwatLinear` (input and weight gradients by torch.nn.grad)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask, x_sparse, stride, padding, dilation, groups):
        sparse_weight = weight * mask
        ctx.save_for_backward(x_sparse, sparse_weight)
        ctx.conf = (x.shape, stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, sparse_weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x_sparse, sparse_weight = ctx.saved_tensors
        x_shape, stride, padding, dilation, groups, has_bias = ctx.conf
        grad_x = conv2d_input(x_shape, sparse_weight, grad_out, stride, padding, dilation, groups)
        grad_w = conv2d_weight(
            x_sparse, sparse_weight.shape, grad_out, stride, padding, dilation, groups
        )
        grad_b = grad_out.sum(dim=(0, 2, 3)) if has_bias else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def topk_activations(x: Tensor, density: float) -> tuple[Tensor, Tensor]:
    """(threshold, sparse x): exactly the round(density * numel) (at least 1) largest |x| kept
    (ties broken by position; zeros are never counted as kept)."""
    flat = x.detach().reshape(-1)
    k = max(1, round(density * flat.numel()))
    top = flat.abs().topk(k)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[top.indices] = True
    return top.values[-1], (flat * (keep & (flat != 0))).view_as(x)


def sparse_activations(x: Tensor, threshold: Tensor) -> Tensor:
    x = x.detach()
    return x * ((x.abs() >= threshold) & (x != 0))


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
        activation_density: float,
        **common: Any,
    ) -> None:
        pattern = common["pattern"]
        self.densities = densities
        self.n_keep = {
            name: max(1, round(densities[name] * pattern.n_units(tuple(w.shape))))
            for name, w in weights.items()
        }
        masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        super().__init__(method, weights, masks, **common)
        self.topk_period = topk_period
        self.weight_thresholds: dict[str, Tensor] = {}
        self.activation_thresholds: dict[str, Tensor] = {}
        self.target_activation_density = {
            name: 1.0 if densities[name] >= 1.0 else activation_density for name in weights
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
    def recompute_masks(self) -> None:
        """Exact top-K per layer; remembers each layer's threshold for reuse."""
        for name, weight in self.weights.items():
            if self.densities[name] >= 1.0:
                continue
            mask = topk_mask(weight.abs(), self.n_keep[name], self.pattern)
            self.masks[name].copy_(mask)
            # the smallest kept |w| (no boolean indexing: no device sync)
            self.weight_thresholds[name] = weight.abs().masked_fill(~mask, torch.inf).min()
        self.masks_changed()

    @torch.no_grad()
    def after_step(self) -> None:
        """Dense weights stay; the top-K follows them: recomputed every topk_period steps,
        else (unstructured) the layer's last threshold is reused."""
        if self._next_step % self.topk_period == 0:
            self.recompute_masks()
        elif self.pattern.kind == "unstructured":
            for name, threshold in self.weight_thresholds.items():
                self.masks[name].copy_(self.weights[name].abs() >= threshold)
            self.masks_changed()

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
            mask = training.masks[name]
            if not (module.training and torch.is_grad_enabled()):
                weight = module.weight * mask
                if isinstance(module, nn.Conv2d):
                    return module._conv_forward(x, weight, module.bias)
                return F.linear(x, weight, module.bias)
            x_sparse = training._sparse_input(name, x)
            if isinstance(module, nn.Conv2d):
                return SwatConv2d.apply(
                    x, module.weight, module.bias, mask, x_sparse, module.stride,
                    module.padding, module.dilation, module.groups,
                )  # fmt: skip
            return SwatLinear.apply(x, module.weight, module.bias, mask, x_sparse)

        module.forward = forward

    @torch.no_grad()
    def _sparse_input(self, name: str, x: Tensor) -> Tensor:
        density = self.target_activation_density[name]
        if density >= 1.0:
            self.activation_density[name] = 1.0
            return x.detach()
        calls = self._forwards[name]
        self._forwards[name] = calls + 1
        if calls % self.topk_period == 0 or name not in self.activation_thresholds:
            threshold, x_sparse = topk_activations(x, density)
            self.activation_thresholds[name] = threshold
        else:
            x_sparse = sparse_activations(x, self.activation_thresholds[name])
        self.activation_density[name] = int((x_sparse != 0).sum()) / x.numel()
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

"""HyperSparse and Adaptive Regularized Training (ART), Glandorf et al. 2023.

ART trains dense and compresses by regularization, then prunes once:

1. dense warm-up for `warmup_epochs` epochs;
2. dense training with the regularization lambda_e * R(w), lambda_e = lambda_init *
   eta^(e - warmup) for epoch e (0-based), so the weight of the regularization rises every
   epoch;
3. after every regularized epoch a pruned copy (global magnitude prune to the target
   sparsity, as the reference's mag_prune) is scored on the training set; once its accuracy
   reaches the dense model's training accuracy of that epoch, raising stops;
4. the model is magnitude-pruned to the target (dropped weights 0, their optimizer state
   reset) and fine-tuned sparse for the remaining epochs.

If the check never passes, the prune happens after epoch round(update_end * epochs) (at least
after one regularized epoch when there is room, at the latest after the last epoch), so every
run ends at the target sparsity. R is `hypersparse` (the HyperSparse loss), `l1` (sum |w|) or
`l2` (sum w^2), the paper's baselines in the same schedule, over every prunable weight not in
`dense_first_last`. FLOPs: the dense phases cost 3 f_D per sample, the fine-tuning 3 f_S, every
check one pruned forward (f_S) per training sample.

Simplification against the reference: it averages the check over a buffer of neighbouring
epochs and prunes the best buffered copy; here the check is one epoch and the current model is
pruned.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from trainables.sparsity.methods import SparseMethod, SparseTraining, _reset_optimizer_state

# tanh(0.6585) ~ 0.577: the HyperSparse constant that fixes s from the prune threshold.
HS_CONSTANT = 0.6585


def _flat_abs(weights: list[Tensor]) -> Tensor:
    return torch.cat([w.reshape(-1) for w in weights]).abs()


def hypersparse_scale(weights: list[Tensor], sparsity: float) -> float:
    """s = 0.6585 / |w|_(floor(sparsity * n)): the sorted magnitude at the prune boundary
    (0-based; found by selection, not a full sort: the same value, 8x faster per step)."""
    magnitudes = _flat_abs(weights).detach()
    index = min(math.floor(sparsity * magnitudes.numel()), magnitudes.numel() - 1)
    boundary = magnitudes.kthvalue(index + 1).values  # k-th smallest, 1-based
    return HS_CONSTANT / max(boundary.item(), 1e-12)


def hypersparse_loss(weights: list[Tensor], sparsity: float) -> Tensor:
    """HS(w) = sum_i |w_i| * T / sg(T) - sum_i |w_i|, T = sum_j tanh(s |w_j|) (sg: no gradient).

    Its value is ~0; its gradient is the paper's closed form (`hypersparse_gradient`):
    sign(w_i) * s * sech^2(s |w_i|) * ||w||_1 / T: weights beyond the prune boundary get
    a vanishing penalty, small ones a large one.
    """
    magnitude = _flat_abs(weights)
    s = hypersparse_scale(weights, sparsity)
    tanh = torch.tanh(s * magnitude)
    total = tanh.sum()
    return (magnitude * (total / total.detach()) - magnitude).sum()


def hypersparse_gradient(weights: list[Tensor], sparsity: float) -> list[Tensor]:
    """The closed-form gradient of `hypersparse_loss`, per weight tensor."""
    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    magnitude = flat.abs()
    s = hypersparse_scale(weights, sparsity)
    factor = magnitude.sum() / torch.tanh(s * magnitude).sum()
    grad = torch.sign(flat) * s / torch.cosh(s * magnitude) ** 2 * factor
    return list(grad.split([w.numel() for w in weights]))


def regularization(weights: list[Tensor], regularizer: str, sparsity: float) -> Tensor:
    if regularizer == "hypersparse":
        return hypersparse_loss(weights, sparsity)
    if regularizer == "l1":
        return sum(w.abs().sum() for w in weights)
    if regularizer == "l2":
        return sum(w.pow(2).sum() for w in weights)
    raise ValueError(f"regularizer={regularizer!r}: allowed hypersparse, l1, l2")


class HyperSparseTraining(SparseTraining):
    def __init__(
        self,
        method: SparseMethod,
        weights: dict[str, nn.Parameter],
        *,
        target_density: float,
        dense_layers: tuple[str, ...],
        warmup_epochs: int,
        lambda_init: float,
        eta: float,
        regularizer: str,
        total_epochs: int,
        **common: Any,
    ) -> None:
        masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        super().__init__(method, weights, masks, **common)
        self.target_density = target_density
        self.regularized = [name for name in weights if name not in dense_layers]
        self.warmup_epochs = warmup_epochs
        self.lambda_init = lambda_init
        self.eta = eta
        self.regularizer = regularizer
        self.total_epochs = total_epochs
        force = round(self.update_end * total_epochs)
        if force <= warmup_epochs < total_epochs:
            force = warmup_epochs + 1  # at least one regularized epoch when there is room
        self.prune_epoch = max(1, min(total_epochs, force))
        self.epoch = 0
        self.pruned = False
        self.checks: list[tuple[int, float, float]] = []  # (epoch, pruned acc, dense acc)

    def regularizing(self) -> bool:
        return not self.pruned and self.epoch >= self.warmup_epochs

    def lambda_at(self, epoch: int) -> float:
        return self.lambda_init * self.eta ** (epoch - self.warmup_epochs)

    def loss_penalty(self) -> Tensor | None:
        if not self.regularizing() or not self.regularized:
            return None
        weights = [self.weights[name] for name in self.regularized]
        sparsity = 1.0 - self.target_density
        return self.lambda_at(self.epoch) * regularization(weights, self.regularizer, sparsity)

    @torch.no_grad()
    def pruned_masks(self) -> dict[str, Tensor]:
        """Global magnitude prune of the regularized layers to the target density (as the
        reference's mag_prune): the round(density * n) largest |w| over all of them."""
        masks = {name: torch.ones_like(mask) for name, mask in self.masks.items()}
        if not self.regularized or self.target_density >= 1.0:
            return masks
        if self.pattern.kind == "n:m":
            from trainables.sparsity.masks import topk_mask

            for name in self.regularized:
                if self.pattern.supports(tuple(self.weights[name].shape)):
                    masks[name] = topk_mask(self.weights[name].abs(), 0, self.pattern)
            return masks
        scores = [self.pattern.unit_scores(self.weights[name].abs()) for name in self.regularized]
        flat = torch.cat(scores)
        n_keep = max(1, round(self.target_density * flat.numel()))
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[flat.topk(n_keep).indices] = True
        parts = keep.split([s.numel() for s in scores])
        for name, part in zip(self.regularized, parts, strict=True):
            masks[name] = self.pattern.expand(part, tuple(self.weights[name].shape))
        return masks

    @torch.no_grad()
    def pruned_accuracy(self, model: nn.Module, batches, y: Tensor, masks) -> float:
        """Training accuracy of the pruned copy over `batches` (model-ready inputs, in the order
        of `y`), in eval mode; the weights and modes are restored."""
        saved = {name: w.detach().clone() for name, w in self.weights.items()}
        modes = {module: module.training for module in model.modules()}
        try:
            for name, weight in self.weights.items():
                weight.mul_(masks[name])
            model.eval()
            pred = torch.cat([model(xb).argmax(dim=1) for xb in batches])
        finally:
            for name, weight in self.weights.items():
                weight.copy_(saved[name])
            for module, training in modes.items():
                module.train(training)
        return int((pred == y).sum()) / len(y)

    @torch.no_grad()
    def prune(self, masks: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
        for name, weight in self.weights.items():
            dropped = ~masks[name]
            weight.masked_fill_(dropped, 0.0)
            _reset_optimizer_state(optimizer, weight, dropped)
            self.masks[name].copy_(masks[name])
        self.masks_changed()
        self.pruned = True

    def on_epoch_end(self, trainer: Any) -> int:
        """ART's per-epoch check and, when it passes (or at prune_epoch), the prune.

        `trainer` gives model, optimizer, data.x_train / y_train and train_accuracy (the dense
        model's running training accuracy of the epoch). Returns the check's FLOPs."""
        was_regularized = self.regularizing()
        self.epoch += 1
        if self.pruned:
            return 0
        flops = 0
        masks = None
        passed = False
        if was_regularized:
            masks = self.pruned_masks()
            data = trainer.data
            x, y = data.x_train, data.y_train
            # stored splits are normalized batch by batch (eval_batches) where the data has it
            batches = data.eval_batches(x) if hasattr(data, "eval_batches") else x.split(4096)
            accuracy = self.pruned_accuracy(trainer.model, batches, y, masks)
            nnz = {name: int(mask.sum()) for name, mask in masks.items()}
            from trainables.flops import layer_flops

            flops = len(y) * sum(layer_flops(self._require_positions(), nnz).values())
            self.checks.append((self.epoch, accuracy, float(trainer.train_accuracy)))
            passed = accuracy >= trainer.train_accuracy
        if passed or self.epoch >= self.prune_epoch:
            self.prune(masks if masks is not None else self.pruned_masks(), trainer.optimizer)
        return flops

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["art"] = {"epoch": self.epoch, "pruned": self.pruned, "checks": list(self.checks)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        art = state["art"]
        self.epoch, self.pruned, self.checks = art["epoch"], art["pruned"], list(art["checks"])
        super().load_state_dict(state)

"""HyperSparse and Adaptive Regularized Training (ART), Glandorf et al. 2023.

ART trains dense and compresses by regularization, then prunes once, as the authors' code
(GreenAutoML4FAS/HyperSparse, `train.py`, `utils/art.py`, `utils/misc.py:ModelBuffer`,
`utils/pruner.py:mag_prune`, `loss/HyperSparse.py`):

1. dense warm-up for `warmup_epochs` epochs;
2. dense training with the regularization lambda_e * R(w), lambda_e = lambda_init *
   eta^(e - warmup) for epoch e (0-based), so the weight of the regularization rises every
   epoch; its gradient is added in closed form (the reference's `grad_HS_loss`; no autograd
   graph through the regularizer);
3. after every regularized epoch a pruned copy (global magnitude prune: keep |w| > the
   sorted |w| at floor(sparsity * n), mag_prune) is scored on the training set and buffered
   with the model (a window of 2 * art_buffer + 1 epochs); when the buffer's mean pruned
   accuracy beats the best so far, the best becomes the buffer's middle copy; once the best
   copy's buffered mean exceeds the dense model's training accuracy of this epoch, ART ends;
4. the model is rewound to that best pruned copy (its masks, weights, norms) and fine-tuned
   sparse with a fresh optimizer state and, with `art_restart` (the reference), a learning-rate
   schedule restarted over the remaining steps.

Where it differs from the authors' code, and why: the reference trains ART for as long as it
takes and then fine-tunes a fixed `epochs`; a study has one fixed budget of epochs, so if the
check never passes the prune happens after epoch round(update_end * epochs) (at least after
one regularized epoch when there is room, at the latest after the last epoch), from the best
buffered copy if there is one, so every run ends at the target sparsity. The pruned copy is
scored on the unaugmented training split in eval mode (the reference reuses its augmenting
train loader). The reference defaults (lambda_init 5e-6, eta 1.05, warmup_epochs 60, buffer
1) are tuned for 160+ epoch CIFAR runs; a short budget needs others (e.g. lambda_init 1e-4,
eta 2.0, warmup_epochs 1-2, as sparsetune's defaults were), which the knobs allow.
R is `hypersparse` (the HyperSparse loss), `l1` (sum |w|) or `l2` (sum w^2), the paper's
baselines in the same schedule, over every prunable weight not in `dense_first_last`. FLOPs:
the dense phases cost 3 f_D per sample, the fine-tuning 3 f_S, every check one pruned forward
(f_S) per training sample.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from trainables.optimizers import Optimizer
from trainables.sparsity.engine import SparseTraining
from trainables.sparsity.masks import kth_largest, topk_mask
from trainables.sparsity.methods.base import Method

# tanh(0.6585) ~ 0.577: the HyperSparse constant that fixes s from the prune threshold.
HS_CONSTANT = 0.6585


def _flat_abs(weights: list[Tensor]) -> Tensor:
    return torch.cat([w.reshape(-1) for w in weights]).abs()


def hypersparse_scale(weights: list[Tensor], sparsity: float) -> float:
    """s = 0.6585 / |w|_(floor(sparsity * n)): the sorted magnitude at the prune boundary
    (0-based; found by selection, `masks.kth_largest`, not a full sort: the same value)."""
    return hypersparse_scale_of(_flat_abs(weights).detach(), sparsity)


def hypersparse_scale_of(magnitudes: Tensor, sparsity: float) -> float:
    n = magnitudes.numel()
    index = min(math.floor(sparsity * n), n - 1)
    boundary = kth_largest(magnitudes, n - index)  # the (index + 1)-th smallest
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


def hypersparse_gradient(
    weights: list[Tensor], sparsity: float, scale: float = 1.0
) -> list[Tensor]:
    """`scale` times the closed-form gradient of `hypersparse_loss` (the reference's
    grad_HS_loss), per weight tensor: sign(w) * s * sech^2(s |w|) * sum|w| / sum tanh(s |w|)."""
    grads, factor = hypersparse_gradient_parts(weights, sparsity)
    return [grad.mul_(factor * scale) for grad in grads]


def hypersparse_gradient_parts(
    weights: list[Tensor], sparsity: float
) -> tuple[list[Tensor], float]:
    """(sign(w) * sech^2(s |w|) per weight tensor, s * sum|w| / sum tanh(s |w|)): the closed
    form in two factors, so a caller folds the constant into its own multiply-add.

    Written for the CPU's memory traffic (it runs every step over every weight): sech^2 as
    1 - tanh^2 (one transcendental per weight instead of tanh and cosh), in place, and the
    sign by copysign."""
    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    magnitude = flat.abs()
    s = hypersparse_scale_of(magnitude, sparsity)
    l1 = magnitude.sum()
    tanh = torch.tanh(magnitude.mul_(s))  # magnitude is now s |w|
    factor = (l1 / tanh.sum()).item() * s
    # (tanh^2 - 1) with the sign of w: |tanh^2 - 1| = 1 - tanh^2, in place
    grad = torch.copysign(tanh.square_().sub_(1.0), flat, out=tanh)
    return list(grad.split([w.numel() for w in weights])), factor


def regularization(weights: list[Tensor], regularizer: str, sparsity: float) -> Tensor:
    if regularizer == "hypersparse":
        return hypersparse_loss(weights, sparsity)
    if regularizer == "l1":
        return sum(w.abs().sum() for w in weights)
    if regularizer == "l2":
        return sum(w.pow(2).sum() for w in weights)
    raise ValueError(f"regularizer={regularizer!r}: allowed hypersparse, l1, l2")


def regularization_gradient(
    weights: list[Tensor], regularizer: str, sparsity: float
) -> list[Tensor]:
    """d R / d w in closed form, per weight tensor (what autograd of `regularization` gives)."""
    if regularizer == "hypersparse":
        return hypersparse_gradient(weights, sparsity)
    if regularizer == "l1":
        return [torch.sign(w.detach()) for w in weights]
    if regularizer == "l2":
        return [2.0 * w.detach() for w in weights]
    raise ValueError(f"regularizer={regularizer!r}: allowed hypersparse, l1, l2")


@torch.no_grad()
def magnitude_prune_masks(weights: list[Tensor], sparsity: float) -> list[Tensor]:
    """The reference's mag_prune: keep |w| > the sorted |w| at floor(n * sparsity), globally."""
    magnitudes = _flat_abs(weights)
    n = magnitudes.numel()
    index = min(math.floor(n * sparsity), n - 1)
    threshold = kth_largest(magnitudes, n - index)
    return [w.detach().abs() > threshold for w in weights]


class HyperSparseTraining(SparseTraining):
    def __init__(
        self,
        method: Method,
        weights: dict[str, nn.Parameter],
        *,
        target_density: float,
        dense_layers: tuple[str, ...],
        warmup_epochs: int,
        lambda_init: float,
        eta: float,
        regularizer: str,
        total_epochs: int,
        art_buffer: int = 1,
        art_restart: bool = True,
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
        self.art_buffer = art_buffer
        self.art_restart = art_restart
        force = round(self.update_end * total_epochs)
        if force <= warmup_epochs < total_epochs:
            force = warmup_epochs + 1  # at least one regularized epoch when there is room
        self.prune_epoch = max(1, min(total_epochs, force))
        self.epoch = 0
        self.pruned = False
        self.checks: list[tuple[int, float, float]] = []  # (epoch, pruned acc, dense acc)
        # ModelBuffer: the last 2 * art_buffer + 1 pruned copies {epoch, accuracy, state, masks}
        self.buffer: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # the middle copy + "mean" of the best buffer

    def regularizing(self) -> bool:
        return not self.pruned and self.epoch >= self.warmup_epochs

    def lambda_at(self, epoch: int) -> float:
        return self.lambda_init * self.eta ** (epoch - self.warmup_epochs)

    def penalty_value(self) -> Tensor | None:
        """lambda_e * R(w) with its autograd graph (for tests and reports; training adds the
        closed-form gradient in `after_backward` instead)."""
        if not self.regularizing() or not self.regularized:
            return None
        weights = [self.weights[name] for name in self.regularized]
        sparsity = 1.0 - self.target_density
        return self.lambda_at(self.epoch) * regularization(weights, self.regularizer, sparsity)

    @torch.no_grad()
    def after_backward(self, step: int, optimizer: torch.optim.Optimizer) -> bool:
        """Add lambda_e * dR/dw (closed form) to the weight gradients, then the shared masking."""
        if self.regularizing() and self.regularized:
            weights = [self.weights[name] for name in self.regularized]
            sparsity = 1.0 - self.target_density
            scale = self.lambda_at(self.epoch)
            if self.regularizer == "hypersparse":  # the constants folded into one add
                grads, factor = hypersparse_gradient_parts(weights, sparsity)
                alpha = factor * scale
            else:
                grads, alpha = regularization_gradient(weights, self.regularizer, sparsity), scale
            for weight, grad in zip(weights, grads, strict=True):
                if weight.grad is None:
                    weight.grad = grad.view_as(weight).mul(alpha)
                else:
                    weight.grad.add_(grad.view_as(weight), alpha=alpha)
        if not self.pruned:
            return False  # every mask is all-True until the prune: nothing to mask
        return super().after_backward(step, optimizer)

    @torch.no_grad()
    def after_step(self) -> None:
        if self.pruned:  # before the prune every mask is all-True: nothing to re-zero
            super().after_step()

    @torch.no_grad()
    def pruned_masks(self) -> dict[str, Tensor]:
        """Global magnitude prune of the regularized layers to the target density (the
        reference's mag_prune for unstructured; the pattern's units otherwise)."""
        masks = {name: torch.ones_like(mask) for name, mask in self.masks.items()}
        if not self.regularized or self.target_density >= 1.0:
            return masks
        if self.pattern.kind == "unstructured":
            weights = [self.weights[name] for name in self.regularized]
            kept = magnitude_prune_masks(weights, 1.0 - self.target_density)
            masks.update(zip(self.regularized, kept, strict=True))
            return masks
        if self.pattern.kind == "n:m":
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
    def prune(
        self,
        masks: dict[str, Tensor],
        optimizer: torch.optim.Optimizer,
        trainer: Any = None,
        model_state: dict[str, Tensor] | None = None,
    ) -> None:
        """Rewind to `model_state` (a buffered pruned copy) if given, apply `masks`, and start
        the fine-tuning: a fresh optimizer state and, with art_restart, a restarted schedule."""
        if model_state is not None and trainer is not None:
            trainer.model.load_state_dict(model_state)
        for name, weight in self.weights.items():
            dropped = ~masks[name]
            weight.masked_fill_(dropped, 0.0)
            Optimizer.reset_state(optimizer, weight, dropped)
            self.masks[name].copy_(masks[name])
        if self.art_restart:
            optimizer.state.clear()  # the reference builds a new SGD for the fine-tuning
            self.lr_restart_step = int(getattr(trainer, "step", 0) or 0)
        self.masks_changed()
        self.pruned = True

    def _buffer_update(self, accuracy: float, masks: dict[str, Tensor], model: nn.Module) -> None:
        """ModelBuffer.update + ART.forward_epoch's best-value rule, as the reference: the
        buffer's mean is compared with the best copy's own (single-epoch) accuracy."""
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        self.buffer.append({"epoch": self.epoch, "accuracy": accuracy, "state": state,
                            "masks": {n: m.clone() for n, m in masks.items()}})  # fmt: skip
        if len(self.buffer) > 2 * self.art_buffer + 1:
            self.buffer.pop(0)
        mean = sum(entry["accuracy"] for entry in self.buffer) / len(self.buffer)
        best_accuracy = self.best["accuracy"] if self.best is not None else 0.0
        if mean > best_accuracy:
            middle = self.buffer[min(len(self.buffer) - 1, self.art_buffer)]
            self.best = {**middle, "mean": mean}

    def on_epoch_end(self, trainer: Any) -> int:
        """ART's per-epoch check and, when it passes (or at prune_epoch), the prune.

        `trainer` gives model, optimizer, data.x_train / y_train and train_accuracy (the dense
        model's running training accuracy of the epoch). Returns the check's FLOPs."""
        was_regularized = self.regularizing()
        self.epoch += 1
        if self.pruned:
            return 0
        flops = 0
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
            self._buffer_update(accuracy, masks, trainer.model)
            passed = self.best is not None and self.best["mean"] > trainer.train_accuracy
        if passed or self.epoch >= self.prune_epoch:
            if self.best is not None:
                self.prune(self.best["masks"], trainer.optimizer, trainer, self.best["state"])
            else:
                self.prune(self.pruned_masks(), trainer.optimizer, trainer)
            self.buffer, self.best = [], None  # the copies are no longer needed
        return flops

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["art"] = {
            "epoch": self.epoch,
            "pruned": self.pruned,
            "checks": list(self.checks),
            "buffer": list(self.buffer),
            "best": self.best,
            "lr_restart_step": self.lr_restart_step,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        art = state["art"]
        self.epoch, self.pruned, self.checks = art["epoch"], art["pruned"], list(art["checks"])
        self.buffer, self.best = list(art.get("buffer", [])), art.get("best")
        self.lr_restart_step = art.get("lr_restart_step")
        super().load_state_dict(state)

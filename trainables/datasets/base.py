"""`DeviceDataset`: the splits of one dataset as tensors on one device (airbench style).

Stored compactly (images as uint8 NCHW, tabular features as float32 standardized), so
the object Ray puts in its object store and every trial unpickles is small. On the device,
batches are drawn by a permutation, gathered, augmented in batch (random flip, random
translate) and normalized with statistics of the training split only: nothing is ever
normalized with validation or test data, and nothing goes through a per-sample Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from contract.errors import ConfigError

AUGMENTATIONS = ("auto", "none", "flip", "translate", "flip_translate")
TRANSLATE_PAD = 4  # pixels: random translation by up to 4 px (= pad 4 + random 32x32 crop)


class DatasetUnavailable(ConfigError):
    """A dataset's files are missing (offline) or unreadable; the message says how to get them."""


@dataclass
class DeviceDataset:
    """Train/val/test splits of one dataset on one device.

    `x_*` hold the stored form: uint8 images (N, C, H, W), or float32 features (N, F) already
    standardized with the training split's statistics; `normalize(x)` maps a batch of them to
    float32 model inputs with the training split's statistics (`mean`, `std`; for stored
    standardized features 0 and 1, the identity). Labels are int64. `train_batches` yields
    normalized, augmented training batches; `eval_batches` normalized batches of a split.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor | None = None  # broadcastable to one sample batch: (1, C, 1, 1) or (1, F)
    std: torch.Tensor | None = None
    augment: str = "none"  # none | flip | translate | flip_translate (resolved, never "auto")
    default_augment: str = "none"  # what augment="auto" means for this dataset
    split: dict[str, Any] = field(default_factory=dict)  # how val was carved: seed, fraction, fold

    def __post_init__(self):
        if self.mean is None:
            self.mean, self.std = normalization_stats(self.x_train)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> DeviceDataset:
        """The same dataset on `device` (moved once; a no-op when already there)."""
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return replace(self, **moved)

    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, torch.Tensor))

    # -- inputs -------------------------------------------------------------------------------

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Stored samples (uint8 or float) to float32 model inputs, with training statistics."""
        if x.dtype == torch.uint8:  # a fresh float copy: normalize it in place
            return x.float().sub_(self.mean).div_(self.std)
        return (x - self.mean) / self.std

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """One epoch of shuffled, augmented, normalized batches; the permutation comes from
        `generator` (on the CPU, so a run is reproducible on every device) and the gather,
        augmentation and normalization run on the data's device."""
        n = len(self.y_train)
        order = torch.randperm(n, device="cpu", generator=generator).to(self.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = self.x_train.index_select(0, idx)
            if self.augment != "none":
                x = augment_batch(x, self.augment, generator)
            yield self.normalize(x), self.y_train.index_select(0, idx)

    def eval_batches(self, x: torch.Tensor, batch_size: int = 1024):
        """Normalized batches of `x` (a stored split such as `x_val`), in order."""
        for start in range(0, len(x), batch_size):
            yield self.normalize(x[start : start + batch_size])

    # -- splits -------------------------------------------------------------------------------

    def configured(self, config: dict[str, Any]) -> DeviceDataset:
        """This dataset with a trial's data knobs applied: `augment`, and, when `folds` or
        `val_fraction` differ from how it was loaded, validation re-carved from train+val
        (test stays the official test set) and the statistics recomputed on the new train."""
        augment = config.get("augment", "auto")
        if augment == "auto":
            augment = self.default_augment
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"augment={augment!r}: allowed {', '.join(AUGMENTATIONS)}")
        if augment != "none" and not self.is_image:
            raise ConfigError(
                f"augment={augment!r}: {self.name} is not an image dataset; use augment=none"
            )
        folds = int(config.get("folds", self.split.get("folds", 1)))
        fold = int(config.get("fold", self.split.get("fold", 0)))
        fraction = float(config.get("val_fraction", self.split.get("val_fraction", 0.2)))
        if folds > 1 and not 0 <= fold < folds:
            raise ConfigError(f"fold={fold} with folds={folds}: allowed 0 to {folds - 1}")
        wanted = {"folds": folds, "fold": fold if folds > 1 else 0, "val_fraction": fraction}
        current = {k: self.split.get(k) for k in wanted}
        if folds == 1:
            current["fold"] = 0
        data = self if wanted == current else self.resplit(**wanted)
        return replace(data, augment=augment) if augment != data.augment else data

    def resplit(self, folds: int, fold: int, val_fraction: float) -> DeviceDataset:
        """Validation carved anew from the pool train+val (in that order), seeded by the split
        seed this dataset was loaded with: a stratified holdout of `val_fraction` when
        folds == 1, else the `fold`-th part of a stratified `folds`-fold partition."""
        seed = int(self.split.get("seed", 0))
        x_pool = torch.cat([self.x_train, self.x_val])
        y_pool = torch.cat([self.y_train, self.y_val])
        train, val = carve_validation(y_pool.cpu().numpy(), val_fraction, seed, folds, fold)
        train_t = torch.as_tensor(train, device=x_pool.device)
        val_t = torch.as_tensor(val, device=x_pool.device)
        split = {**self.split, "folds": folds, "fold": fold, "val_fraction": val_fraction}
        return replace(
            self,
            x_train=x_pool[train_t],
            y_train=y_pool[train_t],
            x_val=x_pool[val_t],
            y_val=y_pool[val_t],
            mean=None,
            std=None,
            split=split,
        )


def normalization_stats(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the training split: per channel for images (N, C, H, W), per feature
    for tabular data (N, F). Tabular statistics are computed exactly as `standardize` does."""
    if x_train.dim() == 4:
        n, c = x_train.shape[:2]
        total = torch.zeros(c, dtype=torch.float64, device=x_train.device)
        squares = torch.zeros(c, dtype=torch.float64, device=x_train.device)
        for start in range(0, n, 4096):  # chunked: no float copy of the whole set
            chunk = x_train[start : start + 4096].double()
            total += chunk.sum(dim=(0, 2, 3))
            squares += chunk.square().sum(dim=(0, 2, 3))
        count = max(n * x_train.shape[2] * x_train.shape[3], 1)
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0).sqrt()
        shape = (1, c, 1, 1)
        return mean.float().view(shape), std.float().clamp_min(1e-6).view(shape)
    mean = x_train.float().mean(dim=0, keepdim=True)
    std = feature_scale(x_train.float().std(dim=0, keepdim=True))
    return mean, std


def augment_batch(x: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and/or random translation of a batch (N, C, H, W), in batch on
    x's device. Random numbers come from `generator` (CPU), then move to the device."""
    n = len(x)
    if "flip" in augment:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    if "translate" in augment:
        x = batch_translate(x, TRANSLATE_PAD, generator)
    return x


def batch_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-pad, pad], zero-filled: the same as
    torchvision's RandomCrop(size, padding=pad), done for the whole batch as one gather from
    the zero-padded batch instead of one Python call per image."""
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).flatten(2)  # (n, c, H' * W')
    rows = torch.arange(h, device=x.device).view(1, h, 1) + shifts[:, 0].view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + shifts[:, 1].view(n, 1, 1)
    index = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, index).view(n, c, h, w)


def carve_validation(
    y: np.ndarray, val_fraction: float, seed: int, folds: int = 1, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val indices into `y`: disjoint, together all of it, stratified."""
    from sklearn.model_selection import StratifiedKFold, train_test_split  # 1-2 s to import

    idx = np.arange(len(y))
    if folds > 1:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        train, val = list(splitter.split(idx, y))[fold]
    else:
        train, val = train_test_split(idx, test_size=val_fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(val)


def stratified_split(
    y: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test: test carved from all, val carved from the rest; disjoint."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def feature_scale(std: torch.Tensor) -> torch.Tensor:
    """What to divide a feature by: its std, or 1 where the training split holds it constant
    (as scikit-learn's StandardScaler). Dividing by a clamped ~0 std would turn a value of 16
    in val or test (digits' border pixels) into 1.6e7, and full_train trains on it: NaN."""
    return torch.where(std > 1e-6, std, torch.ones_like(std))


def standardize(x_train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardize every split with the training split's mean and std (no leak from val/test)."""
    mean = x_train.mean(dim=0, keepdim=True)
    std = feature_scale(x_train.std(dim=0, keepdim=True))
    return [(t - mean) / std for t in (x_train, *others)]


def tabular(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
    split: dict[str, Any],
) -> DeviceDataset:
    """A tabular dataset from train/val/test indices: features standardized once with the
    training split's statistics (stored that way, so `normalize` is the identity: mean 0,
    std 1). A re-split recomputes the statistics on its own train split; standardization is
    affine, so the result is the raw features standardized by the new train split alone."""
    train, val, test = splits
    x_train, x_val, x_test = standardize(x[train], x[val], x[test])
    features = x.shape[1:]
    return DeviceDataset(
        name=name,
        x_train=x_train,
        y_train=y[train],
        x_val=x_val,
        y_val=y[val],
        x_test=x_test,
        y_test=y[test],
        num_classes=num_classes,
        mean=torch.zeros(1, *features),
        std=torch.ones(1, *features),
        split=split,
    )


def from_pool(
    name: str,
    x_pool: np.ndarray | torch.Tensor,
    y_pool: np.ndarray | torch.Tensor,
    x_test: np.ndarray | torch.Tensor,
    y_test: np.ndarray | torch.Tensor,
    num_classes: int,
    split_seed: int,
    val_fraction: float,
    default_augment: str = "none",
) -> DeviceDataset:
    """A dataset from an official train pool and test set: validation carved from the pool by
    a seeded stratified split; normalization statistics from the remaining train only."""
    x_pool, y_pool = torch.as_tensor(x_pool), torch.as_tensor(y_pool).long()
    train, val = carve_validation(y_pool.numpy(), val_fraction, split_seed)
    train_t, val_t = torch.as_tensor(train), torch.as_tensor(val)
    return DeviceDataset(
        name=name,
        x_train=x_pool[train_t].contiguous(),
        y_train=y_pool[train_t],
        x_val=x_pool[val_t].contiguous(),
        y_val=y_pool[val_t],
        x_test=torch.as_tensor(x_test).contiguous(),
        y_test=torch.as_tensor(y_test).long(),
        num_classes=num_classes,
        default_augment=default_augment,
        split={"seed": split_seed, "folds": 1, "fold": 0, "val_fraction": val_fraction},
    )

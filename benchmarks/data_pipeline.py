"""Epoch throughput of the device-resident data pipeline against a torchvision DataLoader.

Same model, same batch size, same optimizer step, in one run: (a) sparsetune's
`DeviceDataset` (uint8 tensors on the device, device-side permutation, batch augmentation and
normalization on the device) and (b) torchvision's dataset class with per-sample transforms
(ToTensor, Normalize; RandomCrop + RandomHorizontalFlip for CIFAR) behind a
`torch.utils.data.DataLoader`, batches copied to the device. Two workloads: an MLP on
MNIST-sized data (60,000 28x28 images, a full epoch) and ResNet-20 on CIFAR-10-sized data
(50,000 32x32x3 images; `--resnet-samples` of an epoch, since a CPU epoch takes minutes).
The files are synthetic (random pixels) in the real on-disk formats, so no download is needed.
Prints samples/s and the ratio; runs on CUDA when available (`--device`).

    ./uvrun python benchmarks/data_pipeline.py
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import platform
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.datasets as tvd
import torchvision.transforms as T
from torch.utils.data import DataLoader

from trainables.config import make_config
from trainables.datasets import load_dataset
from trainables.models import create_model


def write_mnist(root: Path, rng) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes()
        )
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">ii", 2049, n) + labels.tobytes()
        )


def write_cifar10(root: Path, rng) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(10_000, 3072), dtype=np.uint8)
        batch = {"data": data, "labels": (np.arange(10_000) % 10).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(model, batches, device: torch.device, samples: int, warmup: int = 2) -> float:
    """Samples per second of SGD steps over `batches`, after `warmup` untimed steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            sync(device)
            start, seen = time.perf_counter(), 0
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
        if start is not None and seen >= samples:
            break
    sync(device)
    return seen / (time.perf_counter() - start)


def compare(
    name, dataset, model_name, knobs, config, tv_dataset, batch_size, samples, device, workers,
    rounds,
):  # fmt: skip
    """Best of `rounds` for each pipeline, the pipelines interleaved (a busy machine slows
    both alike); prints and returns samples/s per pipeline."""
    data = load_dataset(dataset, args.data_dir, device=str(device))
    data = data.configured(make_config(config))

    def device_batches():
        g = torch.Generator().manual_seed(0)
        while True:
            yield from data.train_batches(batch_size, g)

    def loader_batches(w):
        loader = DataLoader(
            tv_dataset, batch_size=batch_size, shuffle=True, num_workers=w,
            pin_memory=device.type == "cuda", persistent_workers=w > 0,
        )  # fmt: skip
        return itertools.chain.from_iterable(itertools.repeat(loader))

    pipelines = {"device": device_batches(), **{f"loader{w}": loader_batches(w) for w in workers}}
    best = dict.fromkeys(pipelines, 0.0)
    for _ in range(rounds):
        for key, batches in pipelines.items():
            torch.manual_seed(0)
            model = create_model(model_name, data.input_shape, 10, **knobs).to(device)
            best[key] = max(best[key], run(model, batches, device, samples))
    line = f"{name:<27} device pipeline {best['device']:>7.0f} samples/s"
    for w in workers:
        r = best[f"loader{w}"]
        line += f" | DataLoader(workers={w}) {r:>6.0f}/s: {best['device'] / r:4.1f}x"
    print(line, flush=True)
    return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mlp-samples", type=int, default=20_000, help="per round")
    parser.add_argument("--resnet-samples", type=int, default=1_280, help="per round")
    parser.add_argument("--data-dir", default=None, help="default: synthetic files in a tmp dir")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="best of N, interleaved")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{device} ({hw}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir is None:
            args.data_dir = tmp
            rng = np.random.default_rng(0)
            write_mnist(Path(tmp), rng)
            write_cifar10(Path(tmp), rng)
        mnist_tf = T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
        compare(
            "MLP 784-128-128-10, MNIST", "mnist", "mlp", {"depth": 2, "width": 128},
            {"augment": "none"}, tvd.MNIST(args.data_dir, train=True, transform=mnist_tf),
            args.batch_size, args.mlp_samples, device, args.workers, args.rounds,
        )  # fmt: skip
        cifar_tf = T.Compose([
            T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ])  # fmt: skip

        class _CIFAR10(tvd.CIFAR10):  # synthetic batches have no official md5
            def _check_integrity(self):
                return True

            def _load_meta(self):
                self.classes = list(range(10))

        compare(
            "ResNet-20, CIFAR-10 (aug)", "cifar10", "resnet", {"blocks": 3},
            {"augment": "flip_translate"}, _CIFAR10(args.data_dir, train=True, transform=cifar_tf),
            args.batch_size, args.resnet_samples, device, args.workers, args.rounds,
        )  # fmt: skip

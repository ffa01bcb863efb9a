"""Training throughput: mnist-curate's preloaded loop against the notebook's DataLoader pipeline.

Both train LeNet-5 with Adam at the same batch size on the same MNIST
training images for a fixed number of steps. Ours is the train stage's
``fit`` (one preloaded tensor, channels-last weights, one-cycle schedule).
The notebook route decodes every sample through PIL and
``transforms.ToTensor`` plus ``Normalize`` in a shuffling ``DataLoader``.

Usage::

    python tests/benchmarks/bench_train.py --data-dir ../shared/data/mnist [--steps 150] [--repeats 3]

Prints samples/s of each (median over repeats, timed in alternation) and their ratio as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from mnist_curate.config import DataConfig, TrainConfig
from mnist_curate.data import load_mnist
from mnist_curate.model import PIXEL_MEAN, PIXEL_STD, LeNet5, images_to_tensor
from mnist_curate.train import fit
from mnist_curate.ui import Reporter


class PilMnist(Dataset):
    """MNIST as a notebook serves it: one PIL image and one transform call per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((PIXEL_MEAN,), (PIXEL_STD,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index], mode="L")), int(self.labels[index])


def _step(model, optimizer, inputs, targets) -> None:
    loss = F.cross_entropy(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_ours(images, labels, *, batch_size: int, steps: int) -> float:
    """Return samples/s of one epoch of ``mnist_curate.train.fit`` on steps * batch_size preloaded samples."""
    n_samples = steps * batch_size
    inputs, targets = images_to_tensor(images[:n_samples]), torch.from_numpy(labels[:n_samples])
    settings = TrainConfig(batch_size=batch_size)
    result = fit(inputs, targets, settings, epochs=1, seed=0, description="ours", reporter=Reporter(quiet=True))
    return result.n_samples_seen / result.seconds


def time_dataloader(images, labels, *, batch_size: int, steps: int, workers: int) -> float:
    """Return samples/s of the notebook route: PIL and per-sample transforms in a shuffling DataLoader."""
    torch.manual_seed(0)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(PilMnist(images, labels), batch_size=batch_size, shuffle=True, num_workers=workers)
    started = time.perf_counter()
    for step, (inputs, targets) in enumerate(loader):
        if step == steps:
            break
        _step(model, optimizer, inputs, targets)
    return steps * batch_size / (time.perf_counter() - started)


def compare(data_dir, *, limit: int | None = None, batch_size: int = 256, steps: int = 150, repeats: int = 3,
            workers: int = 0) -> dict:
    """Time both routes in alternation and return their median samples/s and the ratio."""
    data = load_mnist(DataConfig(dir=str(data_dir), limit=limit), seed=0)
    images, labels = data.train.images, data.train.labels
    steps = min(steps, len(labels) // batch_size)
    ours, loader = [], []
    for _ in range(repeats):
        ours.append(time_ours(images, labels, batch_size=batch_size, steps=steps))
        loader.append(time_dataloader(images, labels, batch_size=batch_size, steps=steps, workers=workers))
    return {
        "batch_size": batch_size, "steps": steps, "samples": steps * batch_size, "repeats": repeats,
        "threads": torch.get_num_threads(), "dataloader_workers": workers,
        "ours_samples_per_s": round(statistics.median(ours)),
        "dataloader_samples_per_s": round(statistics.median(loader)),
        "ratio": round(statistics.median(ours) / statistics.median(loader), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the notebook route")
    args = parser.parse_args()
    report = compare(args.data_dir, batch_size=args.batch_size, steps=args.steps, repeats=args.repeats,
                     workers=args.workers)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput: mnist-curate's preloaded loop against the notebook's DataLoader pipeline.

Both train the same LeNet-5 with the same optimizer and batch size on the
same MNIST training images for a fixed number of steps. The notebook route
decodes every sample through PIL and ``transforms.ToTensor`` plus
``Normalize`` in a ``DataLoader``; ours slices one preloaded tensor.

Usage::

    python tests/benchmarks/bench_train.py --data-dir ../shared/data/mnist [--steps 150] [--repeats 3]

Prints samples/s of each (median over repeats) and their ratio as JSON.
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

from mnist_curate.config import DataConfig
from mnist_curate.data import load_mnist
from mnist_curate.model import PIXEL_MEAN, PIXEL_STD, LeNet5, images_to_tensor


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


def time_preloaded(images, labels, *, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = images_to_tensor(images), torch.from_numpy(labels)
    order = torch.randperm(len(inputs))
    started = time.perf_counter()
    for step in range(steps):
        batch = order[step * batch_size:(step + 1) * batch_size]
        _step(model, optimizer, inputs[batch], targets[batch])
    return steps * batch_size / (time.perf_counter() - started)


def time_dataloader(images, labels, *, batch_size: int, steps: int, workers: int) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the notebook route")
    args = parser.parse_args()

    data = load_mnist(DataConfig(dir=args.data_dir), seed=0)
    images, labels = data.train.images, data.train.labels
    preloaded, loader = [], []
    for _ in range(args.repeats):
        preloaded.append(time_preloaded(images, labels, batch_size=args.batch_size, steps=args.steps))
        loader.append(time_dataloader(images, labels, batch_size=args.batch_size, steps=args.steps,
                                      workers=args.workers))
    report = {
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "preloaded_samples_per_s": round(statistics.median(preloaded)),
        "dataloader_samples_per_s": round(statistics.median(loader)),
        "ratio": round(statistics.median(preloaded) / statistics.median(loader), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""`python -m benchmarks.plain_run --data DIR`: the end-to-end anchor, a run as a plain script.

What a user would write without the project: torch and numpy only (no Lightning, Hydra or
MLflow to import), the MNIST files parsed with numpy, the project's validation split and
batch order, the blog's model and Keras's initialisation, torch.optim.Adam(fused=True),
subnormals flushed, uint8 pixels scaled per batch, `zero_grad(set_to_none=True)`, one torch
thread; validation after every epoch and a test pass at the end. It prints its timing in
`src.train`'s format, so benchmarks.end_to_end reads both alike.

It imports nothing from `src` on purpose: importing `src.data` or `src.model` would import
Lightning, whose import time is part of what this anchor is measured against.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # as src.train: start-up counts from before the heavy imports

import argparse  # noqa: E402
import gzip  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(root: Path, name: str) -> np.ndarray:
    """An MNIST IDX file (gzipped or not) as an array; no checks beyond numpy's."""
    path = root / f"{name}.gz"
    data = gzip.decompress(path.read_bytes()) if path.exists() else (root / name).read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(root: Path, val_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[train, val, test] as (uint8 pixels (N, H*W), int64 labels), split as the project
    splits: a seeded permutation, validation first, both kept in file order."""
    images, labels = (read_idx(root, name) for name in FILES["train"])
    perm = np.random.default_rng(seed).permutation(len(images))
    test = tuple(read_idx(root, name) for name in FILES["test"])
    splits = [(images[i], labels[i]) for i in (np.sort(perm[val_size:]), np.sort(perm[:val_size]))]
    return [(torch.from_numpy(x.reshape(len(x), -1).copy()), torch.from_numpy(y.astype(np.int64)))
            for x, y in (*splits, test)]


def blog_mlp(in_features: int) -> nn.Sequential:
    """The blog's MLP with Keras's Dense initialisation (Glorot uniform, zero bias)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 128), nn.ReLU(), nn.Dropout(0.2),
                        nn.Linear(128, 10))
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """(mean loss, accuracy) over (x, y), in batches of `batch`."""
    net.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            logits = net(x[lo:lo + batch].to(torch.float32).div_(255))
            loss += float(F.cross_entropy(logits, y[lo:lo + batch], reduction="sum"))
            correct += int((logits.argmax(1) == y[lo:lo + batch]).sum())
    net.train()
    return loss / len(x), correct / len(x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="MNIST IDX directory")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    (x, y), (x_val, y_val), (x_test, y_test) = load(Path(args.data), args.val_size, args.seed)
    torch.manual_seed(args.seed)
    net = blog_mlp(x.shape[1])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, fused=True)
    first_step = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed + epoch))
        for idx in order.split(32):
            loss = F.cross_entropy(net(x[idx].to(torch.float32).div_(255)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_loss, val_acc = evaluate(net, x_val, y_val, 1000)
    test_loss, test_acc = evaluate(net, x_test, y_test, 1000)
    done = time.perf_counter()
    print(f"plain run: test/acc={test_acc:.4f}, test/loss={test_loss:.4f}, "
          f"val/acc={val_acc:.4f}, val/loss={val_loss:.4f}", flush=True)
    print(f"time: start-up {first_step - STARTED:.2f} s (imports, data), "
          f"training {done - first_step:.2f} s", flush=True)


if __name__ == "__main__":
    main()

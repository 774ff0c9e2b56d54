"""LeNet-5 (tanh, max-pooling) on MNIST, trained with purenet's handwritten gradients (`make demo`).

Uses full MNIST (60,000 / 10,000) when its four files are in --data-dir or the cache directory
(`purenet.data.load_mnist`), else the shipped offline sample (4,000 train / 1,000 test), and says which.

    python experiments/lenet5_mnist.py                     # Adam; writes runs/lenet5_mnist/
    python experiments/lenet5_mnist.py --optimizer sgd --normalize
    python experiments/lenet5_mnist.py --quick             # smoke run, a few seconds
"""

from __future__ import annotations

import time

import jax
import numpy as np

import common
from purenet.activations import Tanh
from purenet.conv import Conv2D
from purenet.core import init_model, serial
from purenet.data import load_mnist, load_mnist_sample
from purenet.dense import Dense
from purenet.losses import softmax_cross_entropy
from purenet.pooling import MaxPool2D
from purenet.reshape import Flatten
from purenet.train import fit

NAME = "lenet5_mnist"
IN_SHAPE = (-1, 28, 28, 1)
EPOCHS_SAMPLE, EPOCHS_FULL = 15, 3  # default --epochs for the offline sample / full MNIST
QUICK_TRAIN, QUICK_TEST = 320, 100


def build_model():
    """x (N, 28, 28, 1) -> logits (N, 10)."""
    return serial(
        Conv2D(6, 5), Tanh(), MaxPool2D(2),     # (N, 24, 24, 6) -> (N, 12, 12, 6)
        Conv2D(16, 3), Tanh(), MaxPool2D(2),    # (N, 10, 10, 16) -> (N, 5, 5, 16)
        Flatten(),                              # (N, 400)
        Dense(120), Tanh(), Dense(84), Tanh(), Dense(10),
    )


def load_data(data_dir) -> tuple[dict, str]:
    """Full MNIST if its files are found (in `data_dir`, else the cache), else the offline sample.
    -> (arrays {"x_train": uint8 (N, 28, 28), ...}, a description of the source)."""
    try:
        data, source = load_mnist("mnist", data_dir=data_dir), "full MNIST"
    except FileNotFoundError:
        data, source = load_mnist_sample(), "the shipped offline MNIST sample"
    return data, f"{source} ({len(data['y_train']):,} train / {len(data['y_test']):,} test)"


def prepare(images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) scaled to [0, 1], then (x - mean) / std."""
    return ((images.astype(np.float32) / 255.0 - mean) / std)[..., None]


def main(argv=None) -> dict:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=64,
                                lr_adam=1e-3, lr_sgd=0.05)
    parser.add_argument("--normalize", action="store_true",
                        help="standardize pixels with the training set's mean and std after scaling")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data, source = load_data(args.data_dir)
    print(f"data: {source}")
    if args.epochs is None:
        args.epochs = EPOCHS_FULL if len(data["x_train"]) > 10_000 else EPOCHS_SAMPLE
    if args.quick:
        data = {"x_train": data["x_train"][:QUICK_TRAIN], "y_train": data["y_train"][:QUICK_TRAIN],
                "x_test": data["x_test"][:QUICK_TEST], "y_test": data["y_test"][:QUICK_TEST]}
        args.epochs = 1
        print(f"--quick: {QUICK_TRAIN} train / {QUICK_TEST} test images, 1 epoch")
    mean, std = 0.0, 1.0
    if args.normalize:
        scaled = data["x_train"] / np.float32(255.0)
        mean, std = float(scaled.mean()), float(scaled.std())
    train = {"x": prepare(data["x_train"], mean, std), "y": data["y_train"]}
    test = {"x": prepare(data["x_test"], mean, std), "y": data["y_test"]}

    model, loss, optimizer = build_model(), softmax_cross_entropy(), common.make_optimizer(args)
    _, params, state = init_model(model, jax.random.PRNGKey(args.seed), IN_SHAPE)
    out = common.out_dir(args)
    result = fit(model, loss, optimizer, params, state, train, epochs=args.epochs,
                 batch_size=args.batch_size, seed=args.seed, val_data=test, checkpoint_dir=out)
    wall = time.perf_counter() - start

    metrics = {"data": source, "train_size": len(train["y"]), "test_size": len(test["y"]),
               "epochs": args.epochs, "optimizer": args.optimizer, "lr": args.lr,
               "batch_size": args.batch_size, "normalize": args.normalize, "seed": args.seed,
               "test_loss": result.history["val_loss"][-1],
               "test_accuracy": result.history["val_accuracy"][-1],
               "train_loss": result.history["loss"][-1], "wall_time_s": round(wall, 2)}
    print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} "
          f"({args.epochs} epochs on {source}); wall time {wall:.1f} s")
    common.write_metrics(out / "metrics.json", metrics)
    common.plot_history(result.history, out / "curves.png", f"LeNet-5 on {source}")
    print(f"checkpoint written to {out / 'checkpoint.npz'}")
    return metrics


if __name__ == "__main__":
    main()

"""A small CNN on Fashion-MNIST (two 3x3 conv blocks with max-pooling, a dense head).

Needs the four Fashion-MNIST files: in --data-dir (the directory holding them), else in the cache
(<cache root>/fashion_mnist, see `purenet.data.cache_dir`); `--download` fetches them there first
(SHA-256 checked). Without them the script says how to get them and exits with status 2.

    python experiments/cnn_fashion_mnist.py --download   # once, needs the network
    python experiments/cnn_fashion_mnist.py              # writes runs/cnn_fashion_mnist/
"""

from __future__ import annotations

import sys

import common
from purenet.combinators import serial
from purenet.data import load_mnist, to_float_images
from purenet.layers import Conv2D, Dense, Flatten, MaxPool2D, Relu
from purenet.losses import softmax_cross_entropy

NAME = "cnn_fashion_mnist"
IN_SHAPE = (-1, 28, 28, 1)
QUICK_TRAIN, QUICK_TEST = 256, 64
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def build_model():
    """x (N, 28, 28, 1) -> logits (N, 10)."""
    return serial(
        Conv2D(32, 3, padding="SAME"), Relu(), MaxPool2D(2),  # (N, 14, 14, 32)
        Conv2D(64, 3, padding="SAME"), Relu(), MaxPool2D(2),  # (N, 7, 7, 64)
        Flatten(), Dense(128), Relu(), Dense(10),             # (N, 3136) -> (N, 10)
    )


def main(argv=None) -> dict:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=5, batch_size=128,
                                lr_adam=1e-3, lr_sgd=0.05, quick_epochs=1,
                                data_dir_must_exist=False)  # --download creates it
    parser.add_argument("--download", action="store_true",
                        help="download the missing Fashion-MNIST files first (needs the network)")
    args = parser.parse_args(argv)
    try:
        data = load_mnist("fashion_mnist", data_dir=args.data_dir, download=args.download)
    except FileNotFoundError as err:
        print(f"{err}\n\nThis experiment needs Fashion-MNIST. Either run it once with --download "
              f"(fetches the files into the cache, SHA-256 checked), or put the four files "
              f"(train-images-idx3-ubyte.gz, ...) in a directory and pass --data-dir DIR.",
              file=sys.stderr)
        raise SystemExit(2) from None
    train = {"x": to_float_images(data["x_train"]), "y": data["y_train"]}
    test = {"x": to_float_images(data["x_test"]), "y": data["y_test"]}
    print(f"data: Fashion-MNIST ({len(train['y']):,} train / {len(test['y']):,} test)")
    if args.quick:
        train = {k: v[:QUICK_TRAIN] for k, v in train.items()}
        test = {k: v[:QUICK_TEST] for k, v in test.items()}
        print(f"--quick: {len(train['y'])} train / {len(test['y'])} test images, {args.epochs} epoch(s)")
    _, metrics = common.train_and_report(args, build_model(), softmax_cross_entropy(), train, test, IN_SHAPE,
                                         title="Small CNN on Fashion-MNIST", extra={"data": "Fashion-MNIST"})
    return metrics


if __name__ == "__main__":
    main()

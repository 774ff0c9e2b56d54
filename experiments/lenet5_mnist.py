"""LeNet-5 (tanh, max-pooling) on MNIST, trained with purenet's handwritten gradients (`make demo`).

Uses full MNIST (60,000 / 10,000) when its four files are in --data-dir or the cache directory
(`purenet.data.load_mnist`), else the shipped offline sample (4,000 train / 1,000 test), and says which.

    python experiments/lenet5_mnist.py                     # Adam; writes runs/lenet5_mnist/
    python experiments/lenet5_mnist.py --optimizer sgd --normalize
    python experiments/lenet5_mnist.py --compute-dtype float16   # mixed precision, dynamic loss scaling
    python experiments/lenet5_mnist.py --quick             # smoke run, a few seconds
"""

from __future__ import annotations

import numpy as np

import common
from purenet.data import load_mnist_or_sample, to_float_images
from purenet.losses import softmax_cross_entropy
from purenet.models import lenet5

NAME = "lenet5_mnist"
IN_SHAPE = (-1, 28, 28, 1)
EPOCHS_SAMPLE, EPOCHS_FULL = 15, 3  # default --epochs for the offline sample / full MNIST
QUICK_TRAIN, QUICK_TEST = 320, 100


def main(argv=None) -> dict:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=64,
                                lr_adam=1e-3, lr_sgd=0.05, quick_epochs=1)
    parser.add_argument("--normalize", action="store_true",
                        help="standardize pixels with the training set's mean and std after scaling")
    common.add_precision_flags(parser)
    args = parser.parse_args(argv)
    data, source = load_mnist_or_sample(args.data_dir)
    print(f"data: {source}")
    if args.epochs is None:
        args.epochs = EPOCHS_FULL if len(data["x_train"]) > 10_000 else EPOCHS_SAMPLE
    if args.quick:
        data = {"x_train": data["x_train"][:QUICK_TRAIN], "y_train": data["y_train"][:QUICK_TRAIN],
                "x_test": data["x_test"][:QUICK_TEST], "y_test": data["y_test"][:QUICK_TEST]}
        print(f"--quick: {QUICK_TRAIN} train / {QUICK_TEST} test images, {args.epochs} epoch(s)")
    mean, std = 0.0, 1.0
    if args.normalize:
        scaled = data["x_train"] / np.float32(255.0)
        mean, std = float(scaled.mean()), float(scaled.std())
    train = {"x": to_float_images(data["x_train"], mean, std), "y": data["y_train"]}
    test = {"x": to_float_images(data["x_test"], mean, std), "y": data["y_test"]}
    _, metrics = common.train_and_report(args, lenet5(), softmax_cross_entropy(), train, test, IN_SHAPE,
                                         title=f"LeNet-5 on {source}",
                                         extra={"data": source, "normalize": args.normalize})
    return metrics


if __name__ == "__main__":
    main()

"""Convolutional autoencoder on MNIST: strided Conv2D encoder, 32-d code, ConvTranspose2D decoder.

The decoder ends in logits; training minimises sigmoid binary cross-entropy against the input pixels
(targets = inputs, in [0, 1]); the reconstruction is sigmoid(logits) and we report its test MSE.
Data: full MNIST if found in --data-dir or the cache, else the shipped offline sample (as LeNet-5).

    python experiments/conv_autoencoder.py            # writes runs/conv_autoencoder/
    python experiments/conv_autoencoder.py --quick
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import common
from purenet.combinators import serial
from purenet.data import load_mnist_or_sample, to_float_images
from purenet.layers import Conv2D, ConvTranspose2D, Dense, Flatten, Relu, Reshape
from purenet.losses import sigmoid_binary_cross_entropy

NAME = "conv_autoencoder"
IN_SHAPE = (-1, 28, 28, 1)
QUICK_TRAIN, QUICK_TEST = 256, 64
GRID_COLUMNS = 10


def build_model(code_size: int = 32):
    """x (N, 28, 28, 1) -> reconstruction logits (N, 28, 28, 1), through a code (N, code_size)."""
    return serial(
        Conv2D(16, 3, strides=2, padding="SAME"), Relu(),           # (N, 14, 14, 16)
        Conv2D(32, 3, strides=2, padding="SAME"), Relu(),           # (N, 7, 7, 32)
        Flatten(), Dense(code_size),                                 # (N, code_size)
        Dense(7 * 7 * 32), Relu(), Reshape((7, 7, 32)),              # (N, 7, 7, 32)
        ConvTranspose2D(16, 3, strides=2, padding="SAME"), Relu(),  # (N, 14, 14, 16)
        ConvTranspose2D(1, 3, strides=2, padding="SAME"),           # (N, 28, 28, 1) logits
    )


def reconstruction_mse(logits, images):
    """Mean over pixels of (sigmoid(logits) - images)^2: logits, images (N, 28, 28, 1) -> ()."""
    return jnp.mean(jnp.square(jax.nn.sigmoid(logits) - images))


def plot_reconstructions(images: np.ndarray, recon: np.ndarray, path) -> None:
    """Top row: test inputs; bottom row: their reconstructions. images, recon (K, 28, 28, 1)."""
    fig, axes = plt.subplots(2, len(images), figsize=(len(images) * 1.1, 2.5))
    for column, (image, output) in enumerate(zip(images, recon)):
        for row, picture in enumerate((image, output)):
            axes[row, column].imshow(picture[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            axes[row, column].axis("off")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv=None) -> dict:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=10, batch_size=64,
                                lr_adam=2e-3, lr_sgd=0.1, quick_epochs=1)
    args = parser.parse_args(argv)
    data, source = load_mnist_or_sample(args.data_dir)
    print(f"data: {source}")
    x_train, x_test = to_float_images(data["x_train"]), to_float_images(data["x_test"])  # in [0, 1]
    if args.quick:
        x_train, x_test = x_train[:QUICK_TRAIN], x_test[:QUICK_TEST]
        print(f"--quick: {QUICK_TRAIN} train / {QUICK_TEST} test images, {args.epochs} epoch(s)")

    model, out = build_model(), common.out_dir(args)
    result, metrics = common.train_and_report(
        args, model, sigmoid_binary_cross_entropy(), {"x": x_train, "y": x_train}, {"x": x_test, "y": x_test},
        IN_SHAPE, title=f"Conv autoencoder on {source}", metrics={"mse": reconstruction_mse},
        extra={"data": source, "loss": "sigmoid binary cross-entropy against the input pixels"})
    shown = x_test[:GRID_COLUMNS]
    logits, _ = model.apply(result.params, result.state, jnp.asarray(shown), train=False)
    plot_reconstructions(shown, np.asarray(jax.nn.sigmoid(logits)), out / "reconstructions.png")
    return metrics


if __name__ == "__main__":
    main()

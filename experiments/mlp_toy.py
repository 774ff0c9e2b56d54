"""MLPs on the toy sets: 4-cluster classification (decision-boundary plot) and 1-D regression of
sin(3x) (fit plot). `--task clusters|regression|both`.

    python experiments/mlp_toy.py                     # both tasks; writes runs/mlp_toy/
    python experiments/mlp_toy.py --task regression --quick
"""

from __future__ import annotations

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import common
from purenet.data import four_clusters, regression_1d
from purenet.losses import mean_squared_error, softmax_cross_entropy
from purenet.models import mlp

NAME = "mlp_toy"
NUM_TRAIN, NUM_TEST = 800, 200
QUICK_TRAIN, QUICK_TEST = 256, 64
TEST_SEED_OFFSET = 1000  # test sets are drawn with seed + this, independent of the training set


def build_classifier():
    """x (N, 2) -> logits (N, 4)."""
    return mlp((32, 32), 4, activation="relu")


def build_regressor():
    """x (N, 1) -> y (N, 1)."""
    return mlp((64, 64), 1, activation="tanh")


def _predict(model, result, x):
    return np.asarray(model.apply(result.params, result.state, jnp.asarray(x), train=False)[0])


def run_clusters(args, num_train, num_test) -> dict:
    train = four_clusters(num_train, seed=args.seed)
    test = four_clusters(num_test, seed=args.seed + TEST_SEED_OFFSET)
    model, out = build_classifier(), common.out_dir(args, "clusters")
    result, metrics = common.train_and_report(args, model, softmax_cross_entropy(), train, test, (-1, 2),
                                              title="MLP on four clusters", out=out)

    grid = np.linspace(-2.5, 2.5, 201, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)  # (201, 201) each
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (201 * 201, 2)
    regions = _predict(model, result, points).argmax(axis=1).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(gx, gy, regions, levels=np.arange(-0.5, 4), cmap="tab10", alpha=0.3, vmin=0, vmax=9)
    ax.scatter(test["x"][:, 0], test["x"][:, 1], c=test["y"], cmap="tab10", vmin=0, vmax=9, s=12,
               edgecolors="k", linewidths=0.3)
    accuracy = result.history["val_accuracy"][-1]
    ax.set_title(f"decision regions, test points (accuracy {accuracy:.3f})")
    common.save_figure(fig, out / "decision_boundary.png")
    return metrics


def run_regression(args, num_train, num_test) -> dict:
    train = regression_1d(num_train, seed=args.seed)
    test = regression_1d(num_test, seed=args.seed + TEST_SEED_OFFSET)
    model, out = build_regressor(), common.out_dir(args, "regression")
    result, metrics = common.train_and_report(args, model, mean_squared_error(), train, test, (-1, 1),
                                              title="MLP regression of sin(3x)", out=out)

    xs = np.linspace(-1.0, 1.0, 400, dtype=np.float32)[:, None]  # (400, 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(test["x"][:, 0], test["y"][:, 0], s=8, alpha=0.6, label="test data")
    ax.plot(xs[:, 0], np.sin(3.0 * xs[:, 0]), "k--", lw=1, label="sin(3x)")
    ax.plot(xs[:, 0], _predict(model, result, xs)[:, 0], "r", lw=2, label="MLP")
    mse = result.history["val_loss"][-1]
    ax.set_title(f"1-D regression (test MSE {mse:.4f}; noise variance 0.01)")
    ax.legend()
    common.save_figure(fig, out / "fit.png")
    return metrics | {"test_mse": mse, "train_mse": result.history["loss"][-1]}


def main(argv=None) -> dict:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=100, batch_size=32,
                                lr_adam=1e-2, lr_sgd=0.05, quick_epochs=1)
    parser.add_argument("--task", choices=("clusters", "regression", "both"), default="both")
    args = parser.parse_args(argv)
    num_train, num_test = (QUICK_TRAIN, QUICK_TEST) if args.quick else (NUM_TRAIN, NUM_TEST)
    metrics = {"epochs": args.epochs, "optimizer": args.optimizer, "batch_size": args.batch_size,
               "seed": args.seed}
    if args.task in ("clusters", "both"):
        metrics["clusters"] = run_clusters(args, num_train, num_test)
    if args.task in ("regression", "both"):
        metrics["regression"] = run_regression(args, num_train, num_test)
    metrics["lr"] = common.learning_rate(args)
    common.write_metrics(common.out_dir(args) / "metrics.json", metrics)
    return metrics


if __name__ == "__main__":
    main()

"""MLPs on the toy sets: 4-cluster classification (decision-boundary plot) and 1-D regression of
sin(3x) (fit plot). `--task clusters|regression|both`.

    python experiments/mlp_toy.py                     # both tasks; writes runs/mlp_toy/
    python experiments/mlp_toy.py --task regression --quick
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import common
from purenet.activations import Relu, Tanh
from purenet.core import init_model, serial
from purenet.data import four_clusters, regression_1d
from purenet.dense import Dense
from purenet.losses import mean_squared_error, softmax_cross_entropy
from purenet.train import fit

NAME = "mlp_toy"
NUM_TRAIN, NUM_TEST = 800, 200
QUICK_TRAIN, QUICK_TEST = 256, 64
TEST_SEED_OFFSET = 1000  # test sets are drawn with seed + this, independent of the training set


def build_classifier():
    """x (N, 2) -> logits (N, 4)."""
    return serial(Dense(32), Relu(), Dense(32), Relu(), Dense(4))


def build_regressor():
    """x (N, 1) -> y (N, 1)."""
    return serial(Dense(64), Tanh(), Dense(64), Tanh(), Dense(1))


def _predict(model, result, x):
    return np.asarray(model.apply(result.params, result.state, jnp.asarray(x), train=False)[0])


def _train(args, task, model, loss, train, test, in_shape, **fit_args):
    optimizer = common.make_optimizer(args)
    _, params, state = init_model(model, jax.random.PRNGKey(args.seed), in_shape)
    out = common.out_dir(args, task)
    result = fit(model, loss, optimizer, params, state, train, epochs=args.epochs,
                 batch_size=args.batch_size, seed=args.seed, val_data=test, checkpoint_dir=out, **fit_args)
    print(f"checkpoint written to {out / 'checkpoint.npz'}")
    return result, out


def run_clusters(args, num_train, num_test) -> dict:
    train = four_clusters(num_train, seed=args.seed)
    test = four_clusters(num_test, seed=args.seed + TEST_SEED_OFFSET)
    model = build_classifier()
    result, out = _train(args, "clusters", model, softmax_cross_entropy(), train, test, (-1, 2))
    common.plot_history(result.history, out / "curves.png", "MLP on four clusters")

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
    print(f"clusters: test accuracy {accuracy:.4f}")
    return {"test_accuracy": accuracy, "test_loss": result.history["val_loss"][-1],
            "train_size": num_train, "test_size": num_test}


def run_regression(args, num_train, num_test) -> dict:
    train = regression_1d(num_train, seed=args.seed)
    test = regression_1d(num_test, seed=args.seed + TEST_SEED_OFFSET)
    model = build_regressor()
    result, out = _train(args, "regression", model, mean_squared_error(), train, test, (-1, 1))
    common.plot_history(result.history, out / "curves.png", "MLP regression of sin(3x)")

    xs = np.linspace(-1.0, 1.0, 400, dtype=np.float32)[:, None]  # (400, 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(test["x"][:, 0], test["y"][:, 0], s=8, alpha=0.6, label="test data")
    ax.plot(xs[:, 0], np.sin(3.0 * xs[:, 0]), "k--", lw=1, label="sin(3x)")
    ax.plot(xs[:, 0], _predict(model, result, xs)[:, 0], "r", lw=2, label="MLP")
    mse = result.history["val_loss"][-1]
    ax.set_title(f"1-D regression (test MSE {mse:.4f}; noise variance 0.01)")
    ax.legend()
    common.save_figure(fig, out / "fit.png")
    print(f"regression: test MSE {mse:.5f}")
    return {"test_mse": mse, "train_mse": result.history["loss"][-1], "train_size": num_train,
            "test_size": num_test}


def main(argv=None) -> dict:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=100, batch_size=32,
                                lr_adam=1e-2, lr_sgd=0.05)
    parser.add_argument("--task", choices=("clusters", "regression", "both"), default="both")
    args = parser.parse_args(argv)
    num_train, num_test = (QUICK_TRAIN, QUICK_TEST) if args.quick else (NUM_TRAIN, NUM_TEST)
    if args.quick:
        args.epochs = 1
    metrics = {"epochs": args.epochs, "optimizer": args.optimizer, "batch_size": args.batch_size,
               "seed": args.seed}
    if args.task in ("clusters", "both"):
        metrics["clusters"] = run_clusters(args, num_train, num_test)
    if args.task in ("regression", "both"):
        metrics["regression"] = run_regression(args, num_train, num_test)
    metrics["lr"] = args.lr
    common.write_metrics(common.out_dir(args) / "metrics.json", metrics)
    return metrics


if __name__ == "__main__":
    main()

"""What the experiment scripts share: flags, the optimizer choice, and the tail every run ends with
(init the model, fit, evaluate, write metrics.json, plot the curves, checkpoint).

Every script takes the same core flags (`base_parser`), writes into `--out-dir` (default runs/<name>),
and saves `metrics.json`, PNG plots and `checkpoint.npz` there. Scripts import this module, never each
other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import time

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from purenet.core import init_model  # noqa: E402
from purenet.data.text import char_vocabulary, encode, load_shakespeare, load_text, split  # noqa: E402
from purenet.optim import adam, sgd  # noqa: E402
from purenet.optim.schedules import cosine_decay_schedule  # noqa: E402
from purenet.training import Checkpoint, FitResult, fit  # noqa: E402

SGD_MOMENTUM = 0.9


# Flag types: argparse turns their ArgumentTypeError into "argument --lr: must be ..." and exit status 2,
# so a bad value stops a run before it loads data or trains.
def _number(text: str, cast, ok, expected: str):
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "a finite number > 0")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "a finite number >= 0")


def fraction(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < 1, "a number in (0, 1)")


def existing_directory(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    return text


class _Parser(argparse.ArgumentParser):
    """`base_parser`'s parser: `--quick` sets `--epochs` to `quick_epochs` only when --epochs is not
    given explicitly (an explicit value always wins)."""

    quick_epochs: int | None = None

    def parse_known_args(self, args=None, namespace=None):
        namespace = argparse.Namespace(epochs=_UNSET) if namespace is None else namespace
        args, extras = super().parse_known_args(args, namespace)
        if getattr(args, "epochs", None) is _UNSET:
            args.epochs = self.quick_epochs if args.quick and self.quick_epochs else self.get_default("epochs")
        return args, extras


_UNSET = object()


def base_parser(name: str, description: str, *, epochs: int | None, batch_size: int,
                lr_adam: float, lr_sgd: float, quick_epochs: int | None = None,
                data_dir_must_exist: bool = True) -> argparse.ArgumentParser:
    """The flags every experiment shares; `--lr` defaults to `lr_adam` or `lr_sgd` by `--optimizer`.
    Numbers are validated as they are parsed (`--epochs`, `--batch-size` positive integers, `--lr` a
    finite number > 0, `--seed` >= 0); `--data-dir`, when given, must be an existing directory unless
    `data_dir_must_exist=False` (a script that writes its data there). With `quick_epochs`, `--quick`
    trains that many epochs unless `--epochs` is given."""
    parser = _Parser(prog=f"{name}.py", description=description)
    parser.quick_epochs = quick_epochs
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"learning rate (default {lr_adam} for adam, {lr_sgd} for sgd)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help=f"adam, or sgd with momentum {SGD_MOMENTUM}")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--data-dir", type=existing_directory if data_dir_must_exist else str, default=None,
                        help="directory holding the dataset files")
    parser.add_argument("--out-dir", default=os.path.join("runs", name))
    quick = f", {quick_epochs} epoch unless --epochs is given" if quick_epochs else ""
    parser.add_argument("--quick", action="store_true", help=f"tiny smoke run: a few hundred samples{quick}")
    parser.set_defaults(lr_adam=lr_adam, lr_sgd=lr_sgd)
    return parser


def make_optimizer(args: argparse.Namespace, *, decay_steps: int | None = None):
    """Adam or SGD with momentum at `args.lr` (or the experiment's default rate for that optimizer),
    cosine-decayed to 0 over `decay_steps` steps when given."""
    if args.lr is None:
        args.lr = args.lr_adam if args.optimizer == "adam" else args.lr_sgd
    rate = args.lr if decay_steps is None else cosine_decay_schedule(args.lr, decay_steps)
    return adam(rate) if args.optimizer == "adam" else sgd(rate, momentum=SGD_MOMENTUM)


def out_dir(args: argparse.Namespace, *parts: str) -> pathlib.Path:
    """`args.out_dir` (joined with `parts`), created if missing."""
    path = pathlib.Path(args.out_dir, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_and_report(args: argparse.Namespace, model, loss, train: dict, test: dict, in_shape, *, title: str,
                     out: pathlib.Path | None = None, optimizer=None, metrics=None,
                     extra: dict | None = None) -> tuple[FitResult, dict]:
    """The shared tail: init `model` at `args.seed`, `fit` it on `train` for `args.epochs` (checkpoint
    written to `out` every epoch), evaluate on `test` after each epoch, plot `out/curves.png`, write
    `out/metrics.json` and say where everything went. `out` defaults to `args.out_dir`; `optimizer` to
    `make_optimizer(args)`; `metrics` are `fit`'s. -> (the fit result, the metrics written): the run's
    settings, `extra`, and for every recorded metric m its last `train_m` and `test_m`."""
    start = time.perf_counter()
    out = out_dir(args) if out is None else out
    optimizer = make_optimizer(args) if optimizer is None else optimizer
    _, params, state = init_model(model, jax.random.PRNGKey(args.seed), in_shape)
    result = fit(model, loss, optimizer, params, state, train, epochs=args.epochs, batch_size=args.batch_size,
                 seed=args.seed, val_data=test, checkpoint_dir=out, metrics=metrics)
    report = {"train_size": len(train["y"]), "test_size": len(test["y"]), "epochs": args.epochs,
              "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
              **(extra or {})}
    for name, values in result.history.items():
        report[f"test_{name[4:]}" if name.startswith("val_") else f"train_{name}"] = values[-1]
    report["wall_time_s"] = round(time.perf_counter() - start, 2)
    shown = ", ".join(f"{k} {report[k]:.4f}" for k in sorted(report) if k.startswith("test_") and k != "test_size")
    print(f"{title}: {shown} after {args.epochs} epochs; wall time {report['wall_time_s']:.1f} s")
    plot_history(result.history, out / "curves.png", title)
    write_metrics(out / "metrics.json", report)
    print(f"checkpoint written to {out / 'checkpoint.npz'}")
    return result, report


def write_metrics(path: os.PathLike, metrics: dict) -> None:
    """Write `metrics` as indented JSON and say where."""
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"metrics written to {path}")


def plot_history(history: dict[str, list[float]], path: os.PathLike, title: str) -> None:
    """Loss curves (train, and test when `history` has val_loss) and, when recorded, the accuracies."""
    panels = ["loss"] + [name for name in history if not name.startswith("val_") and name != "loss"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, name in zip(axes[0], panels):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker=".", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker=".", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: os.PathLike) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


def char_text(args: argparse.Namespace) -> tuple[str, str, np.ndarray, np.ndarray]:
    """The character-level scripts' text: `args.text` (a UTF-8 file) or the shipped Shakespeare, its
    vocabulary, and its ids split into train and the held-out last `args.val_fraction` (at most
    `args.val_chars` + 1 ids of it when that is not 0). Fails before any training if `args.prompt` has a
    character outside the vocabulary. -> (text, vocabulary, train ids, validation ids)."""
    text = load_shakespeare() if args.text is None else load_text(args.text)
    vocabulary = char_vocabulary(text)
    encode(args.prompt, vocabulary)
    train_ids, val_ids = split(encode(text, vocabulary), args.val_fraction)
    if args.val_chars:
        val_ids = val_ids[:args.val_chars + 1]
    print(f"text: {args.text or 'shipped Shakespeare'}, {len(text):,} characters, vocabulary {len(vocabulary)}; "
          f"{len(train_ids):,} train / {len(val_ids):,} validation characters" + (" (--quick)" * args.quick))
    return text, vocabulary, train_ids, val_ids


def checkpoint_template(model, in_shape, optimizer, seed: int) -> Checkpoint:
    """The `like=` template for `load_checkpoint` of a run made by `fit(..., seed=seed)`."""
    _, params, state = init_model(model, jax.random.PRNGKey(seed), in_shape)
    return Checkpoint(params, state, optimizer.init(params), 0, jax.random.PRNGKey(seed))

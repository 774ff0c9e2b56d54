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
from typing import Any, Callable, NamedTuple

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from purenet.core import init_model  # noqa: E402
from purenet.data import load_mnist_or_sample, mnist_canvases, to_float_images  # noqa: E402
from purenet.data.text import char_vocabulary, encode, load_shakespeare, load_text, split  # noqa: E402
from purenet.models.set_prediction import hungarian_targets  # noqa: E402
from purenet.optim import (adam, adamw, chain, clip_by_global_norm, dynamic_loss_scale, sgd,  # noqa: E402
                           static_loss_scale)
from purenet.optim.schedules import warmup_cosine_decay_schedule  # noqa: E402
from purenet.summaries import summary  # noqa: E402
from purenet.precision import Policy, with_policy  # noqa: E402
from purenet.training import FitResult, fit, fit_matched, make_matched_step  # noqa: E402

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
    parser.add_argument("--data-parallel", action="store_true",
                        help="split every batch over all devices (jax.devices(): GPUs, or CPU devices simulated "
                             "with JAX_NUM_CPU_DEVICES=8), averaging gradients in one all-reduce")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="join a multi-process job (jax.distributed) at this address; with --processes and "
                             "--process-id; implies --data-parallel, each process training on its share")
    parser.add_argument("--processes", type=positive_int, default=1)
    parser.add_argument("--process-id", type=non_negative_int, default=0)
    parser.set_defaults(lr_adam=lr_adam, lr_sgd=lr_sgd)
    return parser


def data_parallel_mesh(args: argparse.Namespace):
    """None, or the 1-D mesh ("data",) over every device that `--data-parallel` or `--coordinator` asks
    for (after joining the job: Gloo collectives between processes on the CPU)."""
    if args.coordinator is not None:
        if args.process_id >= args.processes:
            raise SystemExit(f"--process-id (={args.process_id}) must be below --processes (={args.processes})")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.processes,
                                   process_id=args.process_id)
    elif args.processes > 1:
        raise SystemExit("--processes > 1 needs --coordinator HOST:PORT")
    if not (args.data_parallel or args.coordinator):
        return None
    print(f"data-parallel over {jax.device_count()} devices ({jax.process_count()} process(es))")
    return jax.make_mesh((jax.device_count(),), ("data",))


def process_share(data: dict) -> dict:
    """This process's share of `data` (every jax.process_count()-th example from its index)."""
    step, index = jax.process_count(), jax.process_index()
    return {k: v[index::step] for k, v in data.items()} if step > 1 else data


class Recipe(NamedTuple):
    """What `make_optimizer` built: the optimizer, its peak learning rate, and the rate it follows (lr, or
    a schedule of the step)."""

    optimizer: Any
    lr: float
    rate: float | Callable


def learning_rate(args: argparse.Namespace) -> float:
    """--lr, or the experiment's default rate for --optimizer."""
    if args.lr is not None:
        return args.lr
    return args.lr_adam if args.optimizer == "adam" else args.lr_sgd


def make_optimizer(args: argparse.Namespace, *, lr: float | None = None, steps: int | None = None, warmup: int = 0,
                   end_lr: float | Callable[[float], float] = 0.0, clip: float | None = None,
                   weight_decay: float | None = None, b2: float = 0.999) -> Recipe:
    """--optimizer's Adam (AdamW with `weight_decay`, on matrices only) or SGD with momentum, at `lr`
    (default `learning_rate(args)`). With `steps`: a linear warmup from 0 over min(`warmup`, steps - 1)
    steps, then a cosine decay to `end_lr` (a rate, or a function of lr: `lambda lr: lr / 10`) at `steps`.
    With `clip`: the gradient is first clipped to that global norm. -> Recipe(optimizer, lr, rate)."""
    lr = learning_rate(args) if lr is None else lr
    end = end_lr(lr) if callable(end_lr) else end_lr
    rate = lr if steps is None else warmup_cosine_decay_schedule(0.0, lr, min(warmup, steps - 1), steps, end)
    if args.optimizer == "sgd":
        optimizer = sgd(rate, momentum=SGD_MOMENTUM)
    elif weight_decay is None:
        optimizer = adam(rate, b2=b2)
    else:
        optimizer = adamw(rate, b2=b2, weight_decay=weight_decay)
    return Recipe(optimizer if clip is None else chain(clip_by_global_norm(clip), optimizer), lr, rate)


def print_summary(model, in_shape, *, depth: int = 2) -> None:
    """Print the model's table (`purenet.summary`: each child's output shape and parameters, children down
    to `depth` path parts, and the totals), as every script does at start-up."""
    print(summary(model, in_shape, depth=depth))


PRECISIONS = ("float32", "bfloat16", "float16")
STATIC_LOSS_SCALE = 2.0**12


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """--compute-dtype (a precision policy: float32 params and output, forward and pullback in this dtype)
    and --loss-scale (none, static 2^12, or dynamic; default dynamic for float16, none otherwise)."""
    parser.add_argument("--compute-dtype", choices=PRECISIONS, default="float32",
                        help="compute forward and backward in this dtype, params and output in float32 "
                             "(purenet.precision.Policy); float32: no policy")
    parser.add_argument("--loss-scale", choices=("none", "static", "dynamic"), default=None,
                        help=f"loss scaling (purenet.optim): static {STATIC_LOSS_SCALE:g}, dynamic from 2^15; "
                             "default dynamic for --compute-dtype float16, none otherwise")


def with_precision(args: argparse.Namespace, model, recipe: Recipe):
    """`model` and `recipe` under --compute-dtype and --loss-scale -> (model, recipe, the settings for
    the report); unchanged (and no settings) for a script without those flags (`add_precision_flags`)."""
    if not hasattr(args, "compute_dtype"):
        return model, recipe, {}
    dtype = args.compute_dtype
    scaling = args.loss_scale or ("dynamic" if dtype == "float16" else "none")
    if dtype != "float32":
        model = with_policy(model, Policy(compute_dtype=dtype))
    if scaling == "static":
        recipe = recipe._replace(optimizer=static_loss_scale(recipe.optimizer, STATIC_LOSS_SCALE))
    elif scaling == "dynamic":
        recipe = recipe._replace(optimizer=dynamic_loss_scale(recipe.optimizer))
    return model, recipe, {"compute_dtype": dtype, "loss_scale": scaling}


def out_dir(args: argparse.Namespace, *parts: str) -> pathlib.Path:
    """`args.out_dir` (joined with `parts`), created if missing."""
    path = pathlib.Path(args.out_dir, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_and_report(args: argparse.Namespace, model, loss, train: dict, test: dict, in_shape, *, title: str,
                     out: pathlib.Path | None = None, recipe: Recipe | None = None, metrics=None,
                     extra: dict | None = None) -> tuple[FitResult, dict]:
    """The shared tail: init `model` at `args.seed`, `fit` it on `train` for `args.epochs` (checkpoint
    written to `out` every epoch), evaluate on `test` after each epoch, plot `out/curves.png`, write
    `out/metrics.json` and say where everything went. `out` defaults to `args.out_dir`; `recipe` to
    `make_optimizer(args)`; `metrics` are `fit`'s. -> (the fit result, the metrics written): the run's
    settings, `extra`, and for every recorded metric m its last `train_m` and `test_m`."""
    start = time.perf_counter()
    out = out_dir(args) if out is None else out
    recipe = make_optimizer(args) if recipe is None else recipe
    model, recipe, precision = with_precision(args, model, recipe)
    mesh = data_parallel_mesh(args)
    print_summary(model, in_shape)
    _, params, state = init_model(model, jax.random.PRNGKey(args.seed), in_shape)
    result = fit(model, loss, recipe.optimizer, params, state, process_share(train), epochs=args.epochs,
                 batch_size=args.batch_size, seed=args.seed, val_data=process_share(test), checkpoint_dir=out,
                 metrics=metrics, mesh=mesh)
    report = {"train_size": len(train["y"]), "test_size": len(test["y"]), "epochs": args.epochs,
              "optimizer": args.optimizer, "lr": recipe.lr, "batch_size": args.batch_size, "seed": args.seed,
              **precision, **(extra or {})}
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


def mnist_images(args: argparse.Namespace, *, validation: int, quick: tuple[int, int]) -> tuple[dict, dict, str]:
    """The images of `load_mnist_or_sample(args.data_dir)` as float (N, 28, 28, 1) in [0, 1] with their
    labels -> (train, held out, description). `args.split == "validation"` holds out the last
    `validation` training images and trains on the rest (choose a recipe there); "test" trains on all of
    them and holds out the test split (report it once). `args.quick` keeps the first `quick` = (train,
    held out) images of each."""
    data, source = load_mnist_or_sample(args.data_dir)
    x, y = data["x_train"], data["y_train"]
    if args.split == "validation":
        heldout, x, y = (x[-validation:], y[-validation:]), x[:-validation], y[:-validation]
    else:
        heldout = (data["x_test"], data["y_test"])
    if args.quick:
        (x, y), heldout = (x[:quick[0]], y[:quick[0]]), (heldout[0][:quick[1]], heldout[1][:quick[1]])
    train, held = {"x": to_float_images(x), "y": y}, {"x": to_float_images(heldout[0]), "y": heldout[1]}
    print(f"data: {source}; training on {len(y):,}, evaluating on {len(heldout[1]):,} {args.split} images"
          + " (--quick)" * args.quick)
    return train, held, source


def count_params(model, in_shape) -> int:
    """How many parameters `model` has at `in_shape`, from their shapes (`jax.eval_shape`: nothing computed)."""
    params = jax.eval_shape(lambda key: init_model(model, key, in_shape)[1], jax.random.PRNGKey(0))
    return int(sum(p.size for p in jax.tree.leaves(params)))


def positive_ints(text: str) -> tuple[int, ...]:
    """A flag type: comma-separated positive integers ("16,32,64": a backbone's channels per stage)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    return values


def jax_grad_twin(model, loss):
    """`(params, state, x, target, key) -> (loss value, dparams, new state)` by `jax.value_and_grad` through
    `model.apply` and `loss.apply`: the reference twin of a handwritten step, trained the same way to tell
    whether a poor figure is ours or the task's (experiments only; purenet itself never uses autodiff)."""
    def gradient(params, state, x, target, key):
        def objective(p):
            y, new_state = model.apply(p, state, x, key=key, train=True)
            return loss.apply(y, target), new_state

        (value, new_state), dparams = jax.value_and_grad(objective, has_aux=True)(params)
        return value, dparams, new_state

    return gradient


# --------------------------------------------------- set prediction on digit canvases (MiniDETR, MiniMaskFormer)


def set_prediction_args(name: str, description: str, argv, *, epochs: int, lr: float, encoder_layers: int,
                        quick: dict, add_flags=None) -> argparse.Namespace:
    """The flags experiments/mini_detr.py and mini_maskformer.py share (canvases, backbone and Transformer,
    the recipe: AdamW with warmup and cosine decay, clipping; the jax.grad twin), then `add_flags(parser)`'s.
    `--quick` sets `quick`'s defaults (flags given explicitly still win)."""
    parser = base_parser(name, description, epochs=epochs, batch_size=16, lr_adam=lr, lr_sgd=0.01, quick_epochs=2)
    add, positive, count = parser.add_argument, positive_int, non_negative_int
    add("--train-canvases", type=positive, default=6000)
    add("--test-canvases", type=positive, default=1000, help="held-out canvases (test or validation)")
    add("--report", choices=("test", "validation"), default="test",
        help="held-out canvases from the test digits, or from 10%% of the training digits (validation)")
    add("--channels", type=positive_ints, default=(16, 32, 64), help="the backbone's stages")
    add("--convs", type=positive, default=2, help="3x3 convolutions per backbone stage")
    add("--d-model", type=positive, default=32)
    add("--heads", type=positive, default=4)
    add("--encoder-layers", type=count, default=encoder_layers)
    add("--decoder-layers", type=positive, default=2)
    add("--queries", type=positive, default=8, help="queries (a canvas has at most 4 digits)")
    add("--no-aux", action="store_true", help="only the last decoder layer's loss (no auxiliary losses)")
    add("--no-object-weight", type=positive_float, default=0.1, help="the no-object class's weight")
    add("--warmup", type=count, default=200, help="linear warmup steps")
    add("--clip", type=positive_float, default=1.0, help="clip gradients to this global norm")
    add("--weight-decay", type=non_negative_float, default=1e-4, help="AdamW's, matrices only")
    add("--gradient", choices=("ours", "jax"), default="ours",
        help="ours: the handwritten pullbacks; jax: jax.value_and_grad of the same model (the twin)")
    add("--train-eval", type=count, default=250, help="training canvases also scored after each epoch")
    add("--samples", type=count, default=8, help="held-out canvases drawn with the model's output")
    add("--eval-batch", type=positive, default=250, help="canvases per evaluation batch")
    if add_flags:
        add_flags(parser)
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    if args.optimizer != "adam":
        parser.error(f"{name} trains with AdamW only (--optimizer adam)")
    return args


def set_prediction_data(args: argparse.Namespace):
    """The canvases `set_prediction_args`' flags ask for (--train-canvases, --test-canvases, --report,
    --seed, --data-dir), their source printed: -> (train, held-out, source), as `mnist_canvases` returns."""
    train, held, source = mnist_canvases(args.train_canvases, args.test_canvases, seed=args.seed,
                                         validation=args.report == "validation", data_dir=args.data_dir)
    print(f"data: {source}")
    return train, held, source


def train_set_model(args: argparse.Namespace, model, loss, *, cost, targets, images, truth, evaluate):
    """Init `model` at --seed, then --epochs of `purenet.training.fit_matched` over (images, truth): the
    matching outside jit (`hungarian_targets(cost, targets)`), AdamW (--lr, linear warmup, cosine decay to
    --lr / 20, decay on matrices) after clipping, handwritten gradients or the jax.grad twin (--gradient),
    `evaluate(params, state)` after each epoch.
    -> (params, state, opt_state, history, steps, training seconds, the Recipe)."""
    in_shape = (-1, *images.shape[1:])
    print_summary(model, in_shape)
    params, state = jax.jit(lambda key: init_model(model, key, in_shape)[1:])(jax.random.PRNGKey(args.seed))
    steps = args.epochs * (len(images) // args.batch_size)
    recipe = make_optimizer(args, steps=steps, warmup=args.warmup, end_lr=lambda lr: lr / 20, clip=args.clip,
                            weight_decay=args.weight_decay)
    step = make_matched_step(model, loss, recipe.optimizer, match=hungarian_targets(cost, targets),
                             gradient=jax_grad_twin(model, loss) if args.gradient == "jax" else None)
    tick = time.perf_counter()
    params, state, opt_state, history = fit_matched(step, params, state, recipe.optimizer.init(params), images,
                                                    truth, epochs=args.epochs, batch_size=args.batch_size,
                                                    seed=args.seed, evaluate=evaluate)
    return params, state, opt_state, history, steps, time.perf_counter() - tick, recipe


def set_prediction_report(args: argparse.Namespace, config, params, history: dict, *, steps: int, lr: float,
                          source: str, train_seconds: float, start: float) -> dict:
    """The settings and timings every set-prediction run reports (the metrics come first, from the script)."""
    return {"report_split": args.report, "gradient": args.gradient, "data": source,
            "num_params": int(sum(p.size for p in jax.tree.leaves(params))), "config": config._asdict(),
            "epochs": args.epochs, "steps": steps, "batch_size": args.batch_size, "lr": lr,
            "warmup": args.warmup, "clip": args.clip, "weight_decay": args.weight_decay, "aux": not args.no_aux,
            "no_object_weight": args.no_object_weight, "seed": args.seed, "history": history,
            "train_seconds": round(train_seconds, 1), "wall_time_s": round(time.perf_counter() - start, 1)}

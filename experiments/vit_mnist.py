"""MiniViT (patches, class token, learned positions, pre-LN encoder; `purenet.models.vit`) on MNIST.

Data, splits and augmentation as experiments/resnet_mnist.py: the shipped sample unless full MNIST is
found, training images shifted by up to --max-shift pixels (`RandomShift`, training only), the recipe
(RECIPE below) chosen with --split validation (the last 1,000 training images held out) and the test
split scored by the default run, on all 4,000 training images. AdamW (weight decay on matrices only),
a linear warmup, then cosine decay to 0.

    python experiments/vit_mnist.py                      # the default run; writes runs/vit_mnist/
    python experiments/vit_mnist.py --split validation   # score on held-out training images (tuning)
    python experiments/vit_mnist.py --quick              # smoke run, seconds
"""

from __future__ import annotations

import argparse

import common
from purenet.combinators import serial
from purenet.data import num_batches
from purenet.layers.augment import RandomShift
from purenet.losses import softmax_cross_entropy
from purenet.models import ViTConfig, vit

NAME = "vit_mnist"
IN_SHAPE = (-1, 28, 28, 1)
VALIDATION = 1000  # held-out training images of --split validation
QUICK_TRAIN, QUICK_TEST = 250, 100
RECIPE = dict(epochs=40, batch_size=50, lr_adam=2e-3, patch_size=7, d_model=64, layers=4, heads=4, hidden=128,
              warmup=50, weight_decay=0.05, max_shift=2)
QUICK = dict(d_model=16, layers=1, heads=2, hidden=32, warmup=2)


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=RECIPE["epochs"],
                                batch_size=RECIPE["batch_size"], lr_adam=RECIPE["lr_adam"], lr_sgd=0.1,
                                quick_epochs=1)
    add, count = parser.add_argument, common.positive_int
    add("--patch-size", type=count, default=RECIPE["patch_size"], help="a divisor of 28")
    add("--d-model", type=count, default=RECIPE["d_model"])
    add("--layers", type=count, default=RECIPE["layers"])
    add("--heads", type=count, default=RECIPE["heads"])
    add("--hidden", type=count, default=RECIPE["hidden"], help="feed-forward width")
    add("--dropout", type=common.non_negative_float, default=0.0)
    add("--warmup", type=common.non_negative_int, default=RECIPE["warmup"], help="linear warmup steps")
    add("--weight-decay", type=common.non_negative_float, default=RECIPE["weight_decay"])
    add("--max-shift", type=common.non_negative_int, default=RECIPE["max_shift"],
        help="random shift of training images, pixels")
    add("--split", choices=("test", "validation"), default="test", help="the held-out images scored")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if 28 % args.patch_size:
        parser.error(f"--patch-size ({args.patch_size}) must divide 28")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    if args.optimizer != "adam":
        parser.error("vit_mnist trains with AdamW only (--optimizer adam)")
    return args


def build_model(args: argparse.Namespace):
    """x (N, 28, 28, 1) -> logits (N, 10): RandomShift (training only), then the MiniViT."""
    config = ViTConfig(image_size=28, patch_size=args.patch_size, d_model=args.d_model, layers=args.layers,
                       heads=args.heads, hidden=args.hidden, dropout=args.dropout)
    return serial(shift=RandomShift(args.max_shift), net=vit(config))


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, heldout, source = common.mnist_images(args, validation=VALIDATION, quick=(QUICK_TRAIN, QUICK_TEST))
    model = build_model(args)
    num_params = common.count_params(model, IN_SHAPE)
    print(f"MiniViT: patches {args.patch_size}x{args.patch_size}, {args.layers} layers of width {args.d_model}, "
          f"{args.heads} heads: {num_params:,} parameters")
    _, metrics = common.train_and_report(
        args, model, softmax_cross_entropy(), train, heldout, IN_SHAPE,
        title=f"MiniViT on {source}, {args.split} split",
        recipe=common.make_optimizer(args, steps=args.epochs * num_batches(len(train["y"]), args.batch_size),
                                     warmup=args.warmup, weight_decay=args.weight_decay),
        extra={"data": source, "split": args.split, "num_params": num_params, "optimizer": "adamw",
               **{k: getattr(args, k) for k in ("patch_size", "d_model", "layers", "heads", "hidden", "dropout",
                                                "warmup", "weight_decay", "max_shift")}})
    return metrics


if __name__ == "__main__":
    main()

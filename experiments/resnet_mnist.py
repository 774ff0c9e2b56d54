"""ResNet (basic residual blocks, BatchNorm, projection shortcuts; `purenet.models.resnet`) on MNIST.

Uses full MNIST when its files are found (`purenet.data.load_mnist_or_sample`), else the shipped sample
(4,000 train / 1,000 test). Training images are shifted by up to --max-shift pixels each way (a
`RandomShift` layer in front of the network: a fresh draw per step, the identity in eval). The recipe
(a stride-2 stem, widths 16-32-64 with two blocks per stage, Adam at 3e-3 cosine-decayed to 0, batch
50, 15 epochs, shifts of 2) was chosen with --split validation (train on the first 3,000 training images,
evaluate on the last 1,000); the default run trains on all 4,000 and scores the test split.

    python experiments/resnet_mnist.py                      # the default run; writes runs/resnet_mnist/
    python experiments/resnet_mnist.py --split validation   # score on held-out training images (tuning)
    python experiments/resnet_mnist.py --quick              # smoke run, seconds
"""

from __future__ import annotations

import argparse

import common
from purenet.combinators import serial
from purenet.data import num_batches
from purenet.layers.augment import RandomShift
from purenet.losses import softmax_cross_entropy
from purenet.models import ResNetConfig, resnet

NAME = "resnet_mnist"
IN_SHAPE = (-1, 28, 28, 1)
VALIDATION = 1000  # held-out training images of --split validation
QUICK_TRAIN, QUICK_TEST = 250, 100
QUICK = dict(widths=(4,), blocks=(1,))


def positive_ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers ("16,32,64")."""
    try:
        return tuple(common.positive_int(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=15, batch_size=50, lr_adam=3e-3,
                                lr_sgd=0.1, quick_epochs=1)
    add = parser.add_argument
    add("--widths", type=positive_ints, default=(16, 32, 64), help="channels per stage")
    add("--blocks", type=positive_ints, default=(2, 2, 2), help="basic blocks per stage")
    add("--stem-strides", type=common.positive_int, default=2, help="the stem convolution's stride")
    add("--max-shift", type=common.non_negative_int, default=2, help="random shift of training images, pixels")
    add("--split", choices=("test", "validation"), default="test", help="the held-out images scored")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if len(args.widths) != len(args.blocks):
        parser.error(f"--widths {args.widths} and --blocks {args.blocks} need one entry per stage")
    return args


def build_model(args: argparse.Namespace):
    """x (N, 28, 28, 1) -> logits (N, 10): RandomShift (training only), then the ResNet."""
    config = ResNetConfig(widths=args.widths, blocks=args.blocks, stem_strides=args.stem_strides)
    return serial(shift=RandomShift(args.max_shift), net=resnet(config))


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, heldout, source = common.mnist_images(args, validation=VALIDATION, quick=(QUICK_TRAIN, QUICK_TEST))
    model = build_model(args)
    num_params = common.count_params(model, IN_SHAPE)
    print(f"ResNet: widths {args.widths}, blocks {args.blocks}, stem stride {args.stem_strides}: "
          f"{num_params:,} parameters")
    _, metrics = common.train_and_report(
        args, model, softmax_cross_entropy(), train, heldout, IN_SHAPE,
        title=f"ResNet on {source}, {args.split} split",
        recipe=common.make_optimizer(args, steps=args.epochs * num_batches(len(train["y"]), args.batch_size)),
        extra={"data": source, "split": args.split, "num_params": num_params, "widths": list(args.widths),
               "blocks": list(args.blocks), "stem_strides": args.stem_strides, "max_shift": args.max_shift})
    return metrics


if __name__ == "__main__":
    main()

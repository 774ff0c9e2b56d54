"""MiniMaskFormer on digit canvases: semantic segmentation by mask classification, mean IoU on held-out canvases.

The canvases of experiments/mini_detr.py (`purenet.data.mnist_canvases`), each pixel labelled with its
digit's class or background (class 10). The ground truth is one segment per class present (background
included) at the masks' resolution (32x32: a segment's share of each 2x2 block). MiniDETR's backbone
and query decoder, a pixel decoder (a small feature pyramid), masks = query embedding . pixel
embedding, Hungarian matching (class + BCE + dice costs) outside the jitted step, class cross-entropy +
BCE + dice losses of every decoder layer. Reports mean IoU over the 11 classes (10 digits + background)
at 64x64 on held-out canvases, and over the 10 digits alone. `--gradient jax` trains the jax.grad twin.

    python experiments/mini_maskformer.py                       # writes runs/mini_maskformer/
    python experiments/mini_maskformer.py --report validation   # for choosing hyperparameters
    python experiments/mini_maskformer.py --gradient jax        # the jax.grad twin
    python experiments/mini_maskformer.py --quick               # smoke run, seconds
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np

import common
from purenet.data.canvas import BACKGROUND
from purenet.models.maskformer import (MaskFormerConfig, maskformer_cost, maskformer_loss, maskformer_targets,
                                       mean_iou, mini_maskformer, segments, semantic_segmentation)
from purenet.training import make_predict, save_checkpoint

NAME = "mini_maskformer"
NUM_CLASSES = BACKGROUND + 1  # the digits and background
MAX_SEGMENTS = 5  # at most 4 digits and the background
QUICK = dict(train_canvases=64, test_canvases=32, channels=(4,), convs=1, d_model=16, heads=2, decoder_layers=1,
             queries=6, mask_dim=8, warmup=2, train_eval=16, samples=2, eval_batch=16)


def parse_args(argv):
    def mask_dim(parser):
        parser.add_argument("--mask-dim", type=common.positive_int, default=32, help="mask and pixel embedding width")

    return common.set_prediction_args(NAME, __doc__.splitlines()[0], argv, epochs=8, lr=2e-3, encoder_layers=0,
                                      quick=QUICK, add_flags=mask_dim)


def plot_samples(images, truth, found, path, title: str) -> None:
    """Held-out canvases, their labelled pixels and the model's (background dark)."""
    n = len(images)
    fig, axes = common.plt.subplots(3, n, figsize=(2.2 * n, 6.6), squeeze=False)
    for i in range(n):
        for row, (image, cmap) in enumerate(((images[i, ..., 0], "gray"), (truth[i], "tab20"), (found[i], "tab20"))):
            shown = image if row == 0 else np.where(image == BACKGROUND, np.nan, image)
            axes[row, i].imshow(shown, cmap=cmap, vmin=0, vmax=None if row == 0 else 19)
            axes[row, i].axis("off")
    for row, label in enumerate(("canvas", "truth", "predicted")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    train, held, source = common.set_prediction_data(args)
    config = MaskFormerConfig(num_classes=NUM_CLASSES, channels=args.channels, convs=args.convs, d_model=args.d_model,
                              heads=args.heads, encoder_layers=args.encoder_layers,
                              decoder_layers=args.decoder_layers, queries=args.queries, mask_dim=args.mask_dim)
    model, loss = mini_maskformer(config), maskformer_loss()
    predict = make_predict(model, functools.partial(semantic_segmentation, size=64))

    def miou(params, state, images, masks):
        return mean_iou(predict(params, state, images, args.eval_batch), masks, NUM_CLASSES)

    def per_epoch(params, state):
        scores = {"val_miou": miou(params, state, held.images, held.masks)[0]}
        if args.train_eval:
            scores["miou"] = miou(params, state, train.images[:args.train_eval], train.masks[:args.train_eval])[0]
        return scores

    truth = segments(train.masks, num_classes=NUM_CLASSES, factor=2, max_segments=MAX_SEGMENTS)
    targets = functools.partial(maskformer_targets, num_classes=NUM_CLASSES, no_object_weight=args.no_object_weight,
                                aux=not args.no_aux)
    params, state, opt_state, history, steps, train_seconds, recipe = common.train_set_model(
        args, model, loss, cost=maskformer_cost, targets=targets, images=train.images, truth=truth,
        evaluate=per_epoch)
    found = predict(params, state, held.images, args.eval_batch)
    miou_all, per_class = mean_iou(found, held.masks, NUM_CLASSES)
    miou_digits = float(np.nanmean(per_class[:BACKGROUND]))
    out = common.out_dir(args)
    save_checkpoint(out / "checkpoint.npz", params=params, state=state, opt_state=opt_state, step=steps,
                    key=jax.random.PRNGKey(args.seed))
    metrics = {"miou": miou_all, "miou_digits": miou_digits, "background_iou": float(per_class[BACKGROUND]),
               "iou_per_class": [None if np.isnan(a) else float(a) for a in per_class],
               "pixel_accuracy": float(np.mean(found == held.masks)),
               **common.set_prediction_report(args, config, params, history, steps=steps, lr=recipe.lr, source=source,
                                              train_seconds=train_seconds, start=start)}
    title = f"MiniMaskFormer ({args.gradient} gradients): {args.report} mIoU {miou_all:.3f} (digits {miou_digits:.3f})"
    common.plot_history({k.replace("miou", "mIoU"): v for k, v in history.items()}, out / "curves.png", title)
    if args.samples:
        plot_samples(held.images[:args.samples], held.masks, found, out / "segmentation.png", title)
    common.write_metrics(out / "metrics.json", metrics)
    print(f"| model | split | mIoU (11 classes) | mIoU (digits) | background IoU | params | train s |\n"
          f"|---|---|---|---|---|---|---|\n| MiniMaskFormer ({args.gradient}) | {args.report} ({args.test_canvases} "
          f"canvases) | {miou_all:.3f} | {miou_digits:.3f} | {per_class[BACKGROUND]:.3f} | {metrics['num_params']:,} | "
          f"{train_seconds:.0f} |")
    print(f"checkpoint written to {out / 'checkpoint.npz'}; wall time {metrics['wall_time_s']:.0f} s")
    return metrics


if __name__ == "__main__":
    main()

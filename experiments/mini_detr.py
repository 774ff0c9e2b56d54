"""MiniDETR on digit canvases: set prediction of digit boxes and classes, mAP at IoU 0.5 on held-out canvases.

Canvases of 64x64 with 1 to 4 MNIST digits (`purenet.data.mnist_canvases`: train canvases from the
training digits, held-out ones from the test digits, or with --report validation from 10% of the
training digits kept apart). A CNN backbone, a Transformer encoder-decoder with learned object queries,
Hungarian matching outside the jitted step, class + L1 + GIoU set loss with the auxiliary losses of every
decoder layer, AdamW with warmup and cosine decay, gradients clipped. Reports mean average precision at
IoU 0.5 (PASCAL VOC all-point) over the 10 digit classes. `--gradient jax` trains a twin of the same
model the same way with `jax.value_and_grad` in place of the handwritten pullbacks (a reference: is a
poor figure ours or the task's?).

    python experiments/mini_detr.py                       # writes runs/mini_detr/
    python experiments/mini_detr.py --report validation   # for choosing hyperparameters
    python experiments/mini_detr.py --gradient jax        # the jax.grad twin
    python experiments/mini_detr.py --quick               # smoke run, seconds
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np

import common
from purenet.models.detr import (BoxTruth, DETRConfig, average_precision, detections, detr_cost, detr_loss,
                                 detr_targets, mini_detr)
from purenet.training import make_predict, save_checkpoint

NAME = "mini_detr"
NUM_CLASSES = 10
QUICK = dict(train_canvases=64, test_canvases=32, channels=(4,), convs=1, d_model=16, heads=2, encoder_layers=0,
             decoder_layers=1, queries=6, warmup=2, train_eval=16, samples=2, eval_batch=16)


def parse_args(argv):
    return common.set_prediction_args(NAME, __doc__.splitlines()[0], argv, epochs=10, lr=2e-3, encoder_layers=2,
                                      quick=QUICK)


def evaluate(predict, params, state, images, truth: BoxTruth, batch_size: int) -> tuple[float, np.ndarray]:
    """mAP at IoU 0.5 (and AP per class) of the detections `predict` finds on images (N, 64, 64, 1)."""
    scores, labels, boxes = predict(params, state, images, batch_size)
    return average_precision(scores, labels, boxes, truth.classes, truth.boxes, num_classes=NUM_CLASSES)


def plot_samples(images, truth: BoxTruth, found, path, title: str) -> None:
    """Held-out canvases with their ground-truth boxes (green) and detections scoring >= 0.5 (red)."""
    scores, labels, boxes = found
    n = len(images)
    fig, axes = common.plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    size = images.shape[1]
    for i, ax in enumerate(axes[0]):
        ax.imshow(images[i, ..., 0], cmap="gray")
        shown = (("lime", [(truth.classes[i, k], truth.boxes[i, k]) for k in range(truth.counts[i])]),
                 ("red", [(labels[i, q], boxes[i, q]) for q in range(len(scores[i])) if scores[i, q] >= 0.5]))
        for color, rows in shown:
            for label, (cx, cy, w, h) in rows:
                ax.add_patch(common.plt.Rectangle(((cx - w / 2) * size - 0.5, (cy - h / 2) * size - 0.5), w * size,
                                                  h * size, fill=False, color=color, lw=1))
                if color == "red":
                    ax.text((cx - w / 2) * size, (cy - h / 2) * size - 1, str(label), color=color, fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    train, held, source = common.set_prediction_data(args)
    truth, held_truth = (BoxTruth(c.classes, c.boxes, c.counts) for c in (train, held))
    config = DETRConfig(num_classes=NUM_CLASSES, channels=args.channels, convs=args.convs, d_model=args.d_model,
                        heads=args.heads, encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers,
                        queries=args.queries)
    model, loss = mini_detr(config), detr_loss()
    predict = make_predict(model, detections)
    tracked = BoxTruth(*(a[:args.train_eval] for a in truth))

    def per_epoch(params, state):
        scores = {"val_map50": evaluate(predict, params, state, held.images, held_truth, args.eval_batch)[0]}
        if args.train_eval:
            scores["map50"] = evaluate(predict, params, state, train.images[:args.train_eval], tracked,
                                       args.eval_batch)[0]
        return scores

    targets = functools.partial(detr_targets, num_classes=NUM_CLASSES, no_object_weight=args.no_object_weight,
                                aux=not args.no_aux)
    params, state, opt_state, history, steps, train_seconds, recipe = common.train_set_model(
        args, model, loss, cost=detr_cost, targets=targets, images=train.images, truth=truth, evaluate=per_epoch)
    map50, per_class = evaluate(predict, params, state, held.images, held_truth, args.eval_batch)
    out = common.out_dir(args)
    save_checkpoint(out / "checkpoint.npz", params=params, state=state, opt_state=opt_state, step=steps,
                    key=jax.random.PRNGKey(args.seed))
    metrics = {"map50": map50, "ap50_per_class": [None if np.isnan(a) else float(a) for a in per_class],
               **common.set_prediction_report(args, config, params, history, steps=steps, lr=recipe.lr, source=source,
                                              train_seconds=train_seconds, start=start)}
    title = f"MiniDETR ({args.gradient} gradients): {args.report} mAP@0.5 {map50:.3f}"
    common.plot_history({k.replace("map50", "mAP@0.5"): v for k, v in history.items()}, out / "curves.png", title)
    if args.samples:
        shown = slice(0, args.samples)
        found = predict(params, state, held.images[shown], args.eval_batch)
        plot_samples(held.images[shown], BoxTruth(*(a[shown] for a in held_truth)), found, out / "detections.png",
                     title)
    common.write_metrics(out / "metrics.json", metrics)
    print(f"| model | split | mAP@0.5 | params | train s |\n|---|---|---|---|---|\n| MiniDETR ({args.gradient}) | "
          f"{args.report} ({args.test_canvases} canvases) | {map50:.3f} | {metrics['num_params']:,} | "
          f"{train_seconds:.0f} |")
    print(f"checkpoint written to {out / 'checkpoint.npz'}; wall time {metrics['wall_time_s']:.0f} s")
    return metrics


if __name__ == "__main__":
    main()

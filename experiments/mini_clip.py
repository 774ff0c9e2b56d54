"""MiniCLIP: contrastive image-caption training on MNIST digits, then zero-shot classification by prompts.

Each training image is paired with a caption drawn from several templates ("a handwritten seven", "an
image of the digit 7", ...); a caption is word tokens plus an end token, right-padded. The model
(`purenet.models.clip`: a small CNN and a causal text Transformer in one space of unit vectors, a learned
temperature) is trained with CLIP's symmetric cross-entropy over the batch (`clip_loss`). A batch holds
many images of each digit: all pairs with the same digit count as positives (the targets spread evenly
over them), not as negatives. Zero-shot: each held-out image gets the digit of its most similar prompt
among the ten "a photo of the digit <word>" captions, a template never seen in training (its words are).
Uses full MNIST when its files are found, else the shipped sample (4,000 train / 1,000 test); the last
500 training images are the validation split (hyperparameters were chosen on it), the test split is
scored once at the end.

    python experiments/mini_clip.py                      # the default run; writes runs/mini_clip/
    python experiments/mini_clip.py --split validation   # score on the validation images only (tuning)
    python experiments/mini_clip.py --quick              # smoke run, seconds
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from purenet.core import init_model
from purenet.data import load_mnist_or_sample, to_float_images
from purenet.models import CLIPConfig, CLIPInput, clip, clip_loss
from purenet.training import Run, make_train_step, run_steps

NAME = "mini_clip"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten {w}", "the digit {w}", "a photo of the number {w}", "an image of the digit {d}",
             "a picture of a handwritten {d}", "the number {d} written by hand", "a scan of a {w}")
PROMPT = "a photo of the digit {w}"  # zero-shot; not among the training templates
PAD, END = "<pad>", "<end>"
VALIDATION = 500
EVAL_BATCH = 500
QUICK = dict(train_images=320, eval_images=100, batch_size=64, channels="8", image_hidden=32, text_layers=1,
             d_model=16, heads=2, embed_dim=16)


def caption(template: str, digit: int) -> str:
    return template.format(w=WORDS[digit], d=digit)


class Captions:
    """Word-level tokens: <pad> is 0, <end> 1, then the words of every template and prompt."""

    def __init__(self, templates):
        words = {w for t in (*templates, PROMPT) for d in range(10) for w in caption(t, d).split()}
        self.vocabulary = [PAD, END, *sorted(words)]
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_len = max(len(caption(t, d).split()) for t in (*templates, PROMPT) for d in range(10)) + 1

    def encode(self, text: str) -> np.ndarray:
        ids = [self.index[w] for w in text.split()] + [self.index[END]]
        return np.array(ids + [0] * (self.max_len - len(ids)), np.int32)  # (L,)

    def table(self, templates) -> np.ndarray:
        """Every template's caption of every digit: (len(templates), 10, L)."""
        return np.stack([[self.encode(caption(t, d)) for d in range(10)] for t in templates])


def batch_accuracy(logits, labels):
    """Images whose most similar caption in the batch has their digit."""
    return jnp.mean(labels[jnp.argmax(logits, axis=1)] == labels)


def make_zero_shot(model):
    @jax.jit
    def predict(params, state, images, prompts):  # prompts (P, 10, L) -> each prompt set's digits (N, P)
        logits, _ = model.apply(params, state, CLIPInput(images, prompts.reshape(-1, prompts.shape[-1])))
        return jnp.argmax(logits.reshape(len(images), *prompts.shape[:2]), axis=-1)

    def accuracy(params, state, images, labels, prompts) -> np.ndarray:
        """Zero-shot accuracy of each prompt set: (P,)."""
        hits = np.zeros(len(prompts))
        for i in range(0, len(images), EVAL_BATCH):
            digits = np.asarray(predict(params, state, images[i:i + EVAL_BATCH], prompts))
            hits += np.sum(digits == labels[i:i + EVAL_BATCH, None], axis=0)
        return hits / len(images)

    return accuracy


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=10, batch_size=128, lr_adam=1e-3,
                                lr_sgd=0.1, quick_epochs=2)
    add = parser.add_argument
    count = common.positive_int
    add("--channels", type=common.positive_ints, default="32,64",
        help="the CNN's channels per 3x3 conv + ReLU + max-pool stage")
    add("--image-hidden", type=count, default=128)
    add("--text-layers", type=count, default=2)
    add("--d-model", type=count, default=64)
    add("--heads", type=count, default=4)
    add("--embed-dim", type=count, default=64)
    add("--warmup", type=common.non_negative_int, default=50, help="linear warmup steps")
    add("--weight-decay", type=common.non_negative_float, default=0.01)
    add("--train-images", type=common.non_negative_int, default=0, help="use this many training images (0: all)")
    add("--eval-images", type=common.non_negative_int, default=0, help="score this many held-out images (0: all)")
    add("--split", choices=("test", "validation"), default="test", help="the held-out images of the final score")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    if args.optimizer != "adam":
        parser.error("mini_clip trains with AdamW only (--optimizer adam)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    data, source = load_mnist_or_sample(args.data_dir)
    x, y = data["x_train"][:-VALIDATION], data["y_train"][:-VALIDATION]
    if args.train_images:
        x, y = x[:args.train_images], y[:args.train_images]
    heldout = {"validation": (data["x_train"][-VALIDATION:], data["y_train"][-VALIDATION:]),
               "test": (data["x_test"], data["y_test"])}
    if args.eval_images:
        heldout = {k: (v[0][:args.eval_images], v[1][:args.eval_images]) for k, v in heldout.items()}
    heldout = {k: (to_float_images(v[0]), v[1]) for k, v in heldout.items()}
    images = to_float_images(x)
    print(f"data: {source}; {len(y):,} train / {len(heldout['validation'][1]):,} validation / "
          f"{len(heldout['test'][1]):,} test images")

    captions = Captions(TEMPLATES)
    table = captions.table(TEMPLATES)  # (K, 10, L)
    prompt_sets = captions.table((PROMPT, *TEMPLATES))  # zero-shot prompts first, then each training template
    config = CLIPConfig(len(captions.vocabulary), max_len=captions.max_len, embed_dim=args.embed_dim,
                        channels=args.channels, image_hidden=args.image_hidden, text_layers=args.text_layers,
                        d_model=args.d_model, heads=args.heads)
    model = clip(config)
    batch = min(args.batch_size, len(y))
    steps_per_epoch = len(y) // batch
    steps = args.epochs * steps_per_epoch
    recipe = common.make_optimizer(args, steps=steps, warmup=args.warmup, weight_decay=args.weight_decay)
    train_step = make_train_step(model, clip_loss(), recipe.optimizer, metrics={"batch_accuracy": batch_accuracy})
    zero_shot = make_zero_shot(model)
    key = jax.random.PRNGKey(args.seed)
    in_shape = CLIPInput((-1, 28, 28, 1), (-1, captions.max_len))
    common.print_summary(model, in_shape)
    params, state = jax.jit(lambda k: init_model(model, k, in_shape)[1:])(key)  # one compilation
    num_params = int(sum(p.size for p in jax.tree.leaves(params)))
    print(f"MiniCLIP: {num_params:,} parameters, vocabulary {len(captions.vocabulary)} words, captions of "
          f"at most {captions.max_len} tokens; {steps} steps of batch {batch}")

    rng, epoch_batches = np.random.default_rng(args.seed), []

    def batch_at(step: int) -> dict:
        if step % steps_per_epoch == 0:  # a new permutation each epoch
            epoch_batches[:] = np.split(rng.permutation(len(y))[:steps_per_epoch * batch], steps_per_epoch)
        i = epoch_batches[step % steps_per_epoch]
        texts = table[rng.integers(0, len(TEMPLATES), len(i)), y[i]]  # a random template per image
        return {"x": CLIPInput(images[i], texts), "y": y[i]}

    history, (val_images, val_labels) = [], heldout["validation"]

    def on_epoch(run: Run) -> None:
        epoch, done = run.step // steps_per_epoch, run.metrics[-steps_per_epoch:]
        val = float(zero_shot(run.params, run.state, val_images, val_labels, prompt_sets)[0])
        history.append((epoch, round(run.trained, 2), float(np.mean([m["loss"] for m in done])),
                        float(np.mean([m["batch_accuracy"] for m in done])), val,
                        float(jnp.exp(jnp.clip(run.params["log_scale"], 0, np.log(config.max_scale))))))
        print(f"epoch {epoch}/{args.epochs}: loss {history[-1][2]:.3f}, in-batch accuracy {history[-1][3]:.3f}, "
              f"validation zero-shot {val:.4f}, logit scale {history[-1][5]:.1f}, {run.trained:.0f} s")

    out = common.out_dir(args)
    run = run_steps(train_step, params, state, recipe.optimizer.init(params), batch_at, key=key, steps=steps,
                    eval_every=steps_per_epoch, on_eval=on_epoch, checkpoint=out / "checkpoint.npz")
    params, state, trained = run.params, run.state, run.trained
    per_prompt = zero_shot(params, state, *heldout[args.split], prompt_sets)
    metrics = {"split": args.split, "zero_shot_accuracy": float(per_prompt[0]), "prompt": PROMPT,
               "accuracy_by_training_template": dict(zip(TEMPLATES, map(float, per_prompt[1:]))),
               "validation_zero_shot_accuracy": history[-1][4], "history": history, "steps": steps,
               "train_seconds": round(trained, 2), "num_params": num_params, "data": source,
               "logit_scale": history[-1][5], "lr": recipe.lr, "channels": list(args.channels),
               **{k: getattr(args, k) for k in ("epochs", "batch_size", "image_hidden", "text_layers", "d_model",
                                                "heads", "embed_dim", "warmup", "weight_decay", "seed")}}
    _, seconds, train_loss, _, val_accuracy, _ = zip(*history)
    fig, (ax1, ax2) = common.plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(seconds, train_loss, marker=".")
    ax1.set_ylabel("training loss (symmetric cross-entropy)")
    ax2.plot(seconds, val_accuracy, marker=".")
    ax2.set_ylabel("validation zero-shot accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("training seconds")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    common.save_figure(fig, out / "curves.png")
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    common.write_metrics(out / "metrics.json", metrics)
    print(f"| split | images | prompt | zero-shot accuracy |\n|---|---|---|---|\n| {args.split} | "
          f"{len(heldout[args.split][1]):,} | {PROMPT.format(w='<digit>')} | {per_prompt[0]:.4f} |")
    print(f"{steps} steps, {trained:.0f} s of training; wall time {metrics['wall_time_s']:.0f} s")
    return metrics


if __name__ == "__main__":
    main()

"""MiniCLIP: the whole two-tower model's gradient through the contrastive loss and the temperature
(inside and past its clamp) against jax.grad, the loss against its formula with duplicate labels, the
structured input's shapes and cotangent, and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model
from purenet.models import CLIPConfig, CLIPInput, clip, clip_loss
from purenet.optim import adam
from purenet.training import make_train_step
from tests.helpers import random_params

TINY = CLIPConfig(vocab_size=7, max_len=6, embed_dim=4, channels=(2,), image_hidden=6, text_layers=1, d_model=8,
                  heads=2, hidden=8)
IN_SHAPE = CLIPInput((-1, 8, 8, 1), (-1, 6))
LABELS = np.array([0, 1, 0, 2, 1])  # a batch of 5 pairs with two duplicated classes


def batch(dtype):
    rng = np.random.default_rng(1)
    texts = rng.integers(1, 7, (5, 6))
    texts[1, 3:], texts[2, 1:] = 0, 0  # two texts right-padded
    return CLIPInput(rng.normal(size=(5, 8, 8, 1)).astype(dtype), texts)


# float64 runs with the temperature past its clamp (exp(5) > 100): there dlog_scale is 0 on both sides. float32
# runs inside it: at the clamp the logits are scaled by 100, so a float32 gradient is the forward's rounding
# amplified 100 times, differently on each side (up to 26 times JAX's own error with YNNPACK off, over 8
# draws; at exp(2.5), at most 4.9).
@pytest.mark.parametrize("dtype, log_scale", [(np.float64, 5.0), (np.float32, 2.5)],
                         ids=["f64-temperature-clamped", "f32-temperature-inside"])
def test_whole_model_gradient_equals_jax(dtype, log_scale):
    model = clip(TINY)
    params, state = random_params(model, CLIPInput((5, 8, 8, 1), (5, 6)), dtype)
    assert params["text"]["body"]["blocks"][0]["attn"]["w_q"].shape == (8, 8) and params["log_scale"].shape == ()
    params["log_scale"] = np.asarray(log_scale, dtype)
    report = check_model(model, clip_loss(), params, state, batch(dtype), LABELS)
    assert all(e.max_rel <= e.rtol for e in report.values())
    scale_error = report["MiniCLIP.dparams['log_scale']"]
    assert scale_error.max_abs == 0.0 if log_scale > np.log(100) else scale_error.max_rel <= scale_error.rtol


def test_images_and_texts_of_different_counts_and_the_cotangent_structure():
    # Zero-shot scores N images against M prompts; traced only (jax.eval_shape), nothing compiled.
    model = clip(TINY)
    params, state = jax.eval_shape(lambda k: model.init(k, IN_SHAPE)[1:], jax.random.PRNGKey(0))
    assert params["log_scale"].shape == () and params["log_scale"].dtype == jnp.float32
    x = CLIPInput(np.zeros((3, 8, 8, 1), np.float32), np.ones((10, 6), np.int32))
    assert jax.eval_shape(lambda p: model.apply(p, state, x)[0], params).shape == (3, 10)
    dx = jax.eval_shape(lambda p: model.vjp(p, state, x)[2](jnp.ones((3, 10)))[1], params)
    assert isinstance(dx, CLIPInput) and dx.image.shape == (3, 8, 8, 1) and dx.text is None


def test_training_step_traces_without_autodiff(autodiff_forbidden):
    # The jitted step (both towers' pullbacks, the loss's, the temperature's) traced with JAX's autodiff
    # patched to raise; jax.eval_shape traces it without compiling.
    model, optimizer = clip(TINY), adam(1e-3)
    params, state = random_params(model, CLIPInput((5, 8, 8, 1), (5, 6)), np.float32)
    step = make_train_step(model, clip_loss(), optimizer, metrics={})
    new_params, *_ = jax.eval_shape(step, params, state, jax.eval_shape(optimizer.init, params),
                                    {"x": batch(np.float32), "y": LABELS}, jax.random.PRNGKey(0))
    assert new_params["log_scale"].shape == ()


def test_loss_spreads_each_target_over_the_pairs_of_its_label():
    logits = np.random.default_rng(0).normal(size=(5, 5)) * 3

    def reference(labels):  # mean over rows and over columns of -sum(targets * log_softmax), halved
        same = (labels[:, None] == labels[None, :]).astype(float)
        targets = same / same.sum(axis=1, keepdims=True)

        def cross_entropy(z):
            return np.mean(-np.sum(targets * (z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))), axis=1))

        return (cross_entropy(logits) + cross_entropy(logits.T)) / 2

    loss = clip_loss()
    apply = jax.jit(loss.apply)  # one program for the three label sets (eagerly, each op compiles on its own)
    for labels in (np.arange(5), np.asarray(LABELS), np.zeros(5, int)):  # CLIP's; duplicates; all one class
        assert float(apply(logits, labels)) == pytest.approx(reference(labels), rel=1e-12)
    with pytest.raises(ValueError, match=r"CLIPLoss: expected square logits \(N, N\)"):
        loss.apply(np.zeros((3, 4)), np.arange(3))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"MiniCLIP: d_model \(=10\) must be divisible by heads \(=4\)"):
        clip(CLIPConfig(5, d_model=10, heads=4))
    with pytest.raises(ValueError, match=r"MiniCLIP: max_scale must be >= 1 / init_temperature"):
        clip(CLIPConfig(5, max_scale=10.0))
    with pytest.raises(ValueError, match=r"MiniCLIP: pad_id must be an id in \[0, vocab_size=5\)"):
        clip(CLIPConfig(5, pad_id=-1))
    with pytest.raises(ValueError, match=r"MiniCLIP: image_encoder must be a Layer"):
        clip(TINY, image_encoder="cnn")

"""BatchNorm, LayerNorm and RMSNorm: running statistics, eval mode, axis_name under vmap, stability, errors.

Train- and eval-mode pullbacks against jax.vjp are registry rows (tests/cases_norm.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_function
from purenet.layers.norm import BatchNorm, LayerNorm, RMSNorm


def _normal(seed, shape, loc=0.0, scale=1.0, dtype=np.float64):
    """Drawn by numpy: jax.random compiles a draw per shape."""
    return (loc + scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def test_batchnorm_train_normalizes_each_channel(key):
    x = _normal(0, (2, 3, 5, 4), loc=3.0, scale=2.0)
    _, params, state = BatchNorm().init(key, x.shape)
    y = np.asarray(jax.jit(lambda x: BatchNorm().apply(params, state, x, train=True)[0])(x))
    np.testing.assert_allclose(np.mean(y, axis=(0, 1, 2)), np.zeros(4), atol=1e-12)
    v = np.var(x, axis=(0, 1, 2))
    np.testing.assert_allclose(np.var(y, axis=(0, 1, 2)), v / (v + 1e-5), rtol=1e-12)  # 1 but for eps


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_batchnorm_running_statistics_update(momentum, key):
    x = _normal(0, (6, 3), loc=np.array([[1.0, -2.0, 0.5]]), scale=np.array([[1.0, 3.0, 0.1]]))
    layer = BatchNorm(momentum=momentum)
    _, params, state = layer.init(key, x.shape)
    _, new_state = layer.apply(params, state, x, train=True)
    _, vjp_state, _ = layer.vjp(params, state, x, train=True)
    # Biased batch variance (divided by N), starting from mean 0 and var 1.
    expected_mean = (1 - momentum) * np.mean(np.asarray(x), axis=0)
    expected_var = momentum + (1 - momentum) * np.var(np.asarray(x), axis=0)
    # computed in float64 (x's dtype) and stored in float32: one rounding, eps/2, beside float64's own
    np.testing.assert_allclose(new_state["mean"], expected_mean, rtol=np.finfo(np.float32).eps)
    np.testing.assert_allclose(new_state["var"], expected_var, rtol=np.finfo(np.float32).eps)
    assert new_state["mean"].dtype == jnp.float32  # state keeps its dtype under float64 inputs
    np.testing.assert_array_equal(vjp_state["var"], new_state["var"])


def test_batchnorm_unbiased_running_var_is_pytorchs(key):
    x = _normal(0, (2, 3, 4), loc=np.array([[[1.0, -2.0, 0.5, 0.0]]]), scale=np.array([[[1.0, 3.0, 0.1, 2.0]]]))
    biased, unbiased = BatchNorm(), BatchNorm(unbiased_running_var=True)
    _, params, state = biased.init(key, x.shape)
    y, new_state = unbiased.apply(params, state, x, train=True)
    y_biased, _ = biased.apply(params, state, x, train=True)
    np.testing.assert_array_equal(y, y_biased)  # only the running variance changes, not the normalization
    flat = np.asarray(x).reshape(-1, 4)
    np.testing.assert_allclose(new_state["var"], 0.9 + 0.1 * np.var(flat, axis=0, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(new_state["mean"], 0.1 * np.mean(flat, axis=0), rtol=1e-6)


def test_batchnorm_eval_uses_running_statistics():
    layer = BatchNorm(eps=1e-3)
    params = {"gamma": np.array([2.0, 0.5]), "beta": np.array([1.0, -1.0])}
    state = {"mean": jnp.array([0.5, -1.0], jnp.float32), "var": jnp.array([4.0, 0.25], jnp.float32)}
    x, dy = _normal(0, (3, 5, 2)), _normal(1, (3, 5, 2))

    @jax.jit
    def eval_mode(x, x1):
        y, new_state = layer.apply(params, state, x)
        return y, new_state, layer.apply(params, state, x1)[0]

    y, new_state, one = eval_mode(x, x[1:2])
    mean, var = (np.asarray(state[name], np.float64).reshape(1, 1, 2) for name in ("mean", "var"))
    expected = (x - mean) / np.sqrt(var + 1e-3) * params["gamma"].reshape(1, 1, 2) + params["beta"].reshape(1, 1, 2)
    np.testing.assert_allclose(y, expected, rtol=1e-12)  # the float32 statistics cast up exactly
    np.testing.assert_array_equal(new_state["mean"], state["mean"])
    np.testing.assert_array_equal(new_state["var"], state["var"])
    np.testing.assert_allclose(one, y[1:2], rtol=1e-12)  # eval does not mix examples
    # (that eval returns the very state object: test_batchnorm_training_needs_two_values_per_channel)

    def ours(params, x):  # the eval-mode pullback at these (non-trivial) statistics, against jax.vjp
        y, _, pullback = layer.vjp(params, state, x)
        return y, pullback(dy)

    def theirs(params, x):
        y, pullback = jax.vjp(lambda p, x: layer.apply(p, state, x)[0], params, x)
        return y, pullback(dy)

    check_function(ours, theirs, params, x, what="BatchNorm eval")


def test_batchnorm_axis_name_under_vmap_equals_the_whole_batch():
    x = _normal(0, (4, 3, 2), loc=1.0)  # 2 shards of (2, 3, 2)
    dy = _normal(1, x.shape)
    whole, synced = BatchNorm(), BatchNorm(axis_name="batch")
    state = {"mean": jnp.zeros(2, jnp.float32), "var": jnp.ones(2, jnp.float32)}
    params = {"gamma": jnp.array([1.5, -0.5]), "beta": jnp.array([0.1, 0.2])}

    def step(layer, x, dy):
        y, new_state, pullback = layer.vjp(params, state, x, train=True)
        dparams, dx = pullback(dy)
        return y, new_state, dparams, dx

    shard = lambda a: a.reshape((2, 2) + a.shape[1:])  # noqa: E731

    @jax.jit
    def whole_and_sharded(x, dy):
        return step(whole, x, dy), jax.vmap(lambda x, dy: step(synced, x, dy), axis_name="batch")(shard(x), shard(dy))

    (y, new_state, dparams, dx), (ys, states, dparams_s, dxs) = whole_and_sharded(x, dy)
    np.testing.assert_allclose(ys.reshape(x.shape), y, rtol=1e-12)
    np.testing.assert_allclose(dxs.reshape(x.shape), dx, rtol=1e-10, atol=1e-12)
    for name in ("mean", "var"):
        # float64 statistics equal up to float64 rounding, each stored in float32: at most 1 ulp apart
        np.testing.assert_allclose(states[name], jnp.stack([new_state[name]] * 2), rtol=np.finfo(np.float32).eps)
    for name in ("gamma", "beta"):  # parameter gradients are per shard: they sum to the whole batch's
        np.testing.assert_allclose(jnp.sum(dparams_s[name], axis=0), dparams[name], rtol=1e-10)


def test_batchnorm_is_stable_for_a_large_mean_in_float32(key):
    x = _normal(0, (64, 3), loc=1e4, dtype=np.float32)
    layer = BatchNorm()
    _, params, state = layer.init(key, x.shape)
    # A one-pass E[x^2] - E[x]^2 would lose every digit at a mean of 1e4 in float32; the two-pass form is
    # held to the suite's rule against JAX's own float32 two-pass formula, the float64 run the truth.
    def plain(x):
        var = jnp.var(x, axis=0, keepdims=True)
        return (x - jnp.mean(x, axis=0, keepdims=True)) / jnp.sqrt(var + 1e-5), 0.9 + 0.1 * var[0]

    def ours(x):
        y, new_state = layer.apply(params, state, x, train=True)
        return y, new_state["var"].astype(x.dtype)

    check_function(ours, plain, x, what="BatchNorm at mean 1e4")


def test_layernorm_normalizes_each_example_and_ignores_train(key):
    x = _normal(0, (2, 3, 6), loc=-4.0, scale=5.0)
    layer = LayerNorm()
    _, params, state = layer.init(key, x.shape)
    y, _ = layer.apply(params, state, x, train=True)
    y_eval, _ = layer.apply(params, state, x)
    assert state == {} and set(params) == {"gamma", "beta"}
    np.testing.assert_array_equal(y, y_eval)
    np.testing.assert_allclose(jnp.mean(y, axis=-1), jnp.zeros((2, 3)), atol=1e-12)
    v = jnp.var(x, axis=-1)
    np.testing.assert_allclose(jnp.var(y, axis=-1), v / (v + 1e-5), rtol=1e-12)  # 1 but for eps


def test_rmsnorm_scales_by_the_root_mean_square_without_centering(key):
    x = _normal(0, (2, 3, 6), loc=2.0, scale=3.0)
    layer = RMSNorm(eps=1e-3)
    _, params, state = layer.init(key, x.shape)
    params = {"gamma": jnp.linspace(0.5, 2.0, 6)}
    y, _ = layer.apply(params, state, x, train=True)
    expected = x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-3) * params["gamma"][None, None]
    assert state == {}
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    y1, _ = RMSNorm().apply({"gamma": jnp.ones(6)}, state, x)
    ms = jnp.mean(x * x, axis=-1)
    np.testing.assert_allclose(jnp.mean(y1 * y1, axis=-1), ms / (ms + 1e-6), rtol=1e-12)  # 1 but for eps
    assert float(jnp.min(jnp.abs(jnp.mean(y1, axis=-1)))) > 0.1  # the mean is kept, not subtracted
    assert set(layer.init(key, (2, 3))[1]) == {"gamma"} and RMSNorm(use_scale=False).init(key, (2, 3))[1] == {}


def test_use_scale_and_use_bias_select_params(key):
    for layer in (BatchNorm(use_scale=False), LayerNorm(use_scale=False)):
        assert set(layer.init(key, (2, 3))[1]) == {"beta"}
    for layer in (BatchNorm(use_bias=False), LayerNorm(use_bias=False)):
        assert set(layer.init(key, (2, 3))[1]) == {"gamma"}


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("momentum", [1.5, -0.1])
def test_batchnorm_momentum_in_zero_one(momentum):
    with pytest.raises(ValueError, match=r"^BatchNorm: momentum must be a number in \[0, 1\], got momentum="):
        BatchNorm(momentum=momentum)


@pytest.mark.parametrize("constructor", [BatchNorm, LayerNorm, RMSNorm])
@pytest.mark.parametrize("eps", [0.0, -1e-5, float("inf")])
def test_eps_must_be_positive(constructor, eps):
    with pytest.raises(ValueError, match=rf"^{constructor.__name__}: eps must be a positive finite number, "
                                         rf"got eps={eps!r}$"):
        constructor(eps=eps)


@pytest.mark.parametrize("constructor, name", [(BatchNorm, "momentum"), (BatchNorm, "eps"), (LayerNorm, "eps"),
                                               (RMSNorm, "eps")])
@pytest.mark.parametrize("bad", ["0.9", None, True])
def test_numbers_must_be_real(constructor, name, bad):
    with pytest.raises(ValueError, match=rf"^{constructor.__name__}: {name} must be a real number, got {name}="):
        constructor(**{name: bad})


@pytest.mark.parametrize("constructor", [BatchNorm, LayerNorm])
def test_scale_and_bias_flags_must_be_bool(constructor):
    with pytest.raises(ValueError, match=rf"^{constructor.__name__}: use_bias must be a bool, got use_bias=1$"):
        constructor(use_bias=1)


def test_rmsnorm_use_scale_must_be_bool():
    with pytest.raises(ValueError, match=r"^RMSNorm: use_scale must be a bool, got use_scale=0$"):
        RMSNorm(use_scale=0)


@pytest.mark.parametrize("constructor", [BatchNorm, LayerNorm, RMSNorm])
def test_rank_below_two_at_init(constructor, key):
    with pytest.raises(ValueError, match=rf"^{constructor.__name__}: expected input of rank >= 2 \(N, \.\.\., C\), "
                                         r"got shape \(5,\)$"):
        constructor().init(key, (5,))


@pytest.mark.parametrize("constructor", [BatchNorm, LayerNorm, RMSNorm])
def test_unknown_channels_at_init(constructor, key):
    with pytest.raises(ValueError, match=r"in_shape\[-1\] must be a positive int, got shape \(2, -1\)$"):
        constructor().init(key, (2, -1))


@pytest.mark.parametrize("constructor", [BatchNorm, LayerNorm, RMSNorm])
def test_channel_mismatch_at_apply(constructor, key):
    layer = constructor()
    _, params, state = layer.init(key, (2, 3))
    with pytest.raises(ValueError, match=rf"^{constructor.__name__}: expected input shape \(N, \.\.\., 3\), "
                                         r"got \(2, 4\)$"):
        layer.apply(params, state, jnp.ones((2, 4)))


@pytest.mark.parametrize("shape", [(1, 3), (0, 3), (1, 1, 3)])
def test_batchnorm_training_needs_two_values_per_channel(shape, key):
    # One value: the output would be beta with zero gradients; none: NaN statistics for good.
    layer = BatchNorm()
    _, params, state = layer.init(key, shape)
    count = shape[0] * shape[1] if len(shape) == 3 else shape[0]
    message = (rf"BatchNorm: train=True needs at least 2 values per channel to take batch statistics over, got "
               rf"input of shape \({', '.join(map(str, shape))}\) \({count} per channel\)")
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda x: layer.vjp(params, state, x, train=True)[0], jax.ShapeDtypeStruct(shape, jnp.float32))
    y, same = layer.apply(params, state, jnp.ones(shape), train=False)  # eval: the running statistics
    assert y.shape == shape and same is state
    assert layer.apply(params, state, jnp.ones((1, 2, 3)), train=True)[0].shape == (1, 2, 3)  # 2 values each

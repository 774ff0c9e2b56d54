"""ClassToken, TokenAt and RandomShift: values and errors (pullbacks against jax.vjp: registry rows in
cases_tokens.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.layers.augment import RandomShift
from purenet.layers.tokens import ClassToken, TokenAt


def test_class_token_is_prepended_and_read_back(key):
    out_shapes = []

    def init(k):  # traced only: the token is drawn by numpy
        out_shape, params, _ = ClassToken().init(k, (-1, 4, 3))
        out_shapes.append(out_shape)
        return params

    params = jax.tree_util.tree_map(lambda a: np.random.default_rng(0).standard_normal(a.shape),
                                    jax.eval_shape(init, key))

    @jax.jit
    def prepend_and_read_back(x):
        y, _ = ClassToken().apply(params, {}, x)
        return y, TokenAt(0).apply({}, {}, y)[0]

    y, read_back = prepend_and_read_back(jnp.ones((2, 4, 3)))
    assert out_shapes[0] == (-1, 5, 3) and y.shape == (2, 5, 3)
    np.testing.assert_array_equal(read_back, np.broadcast_to(params["token"], (2, 3)))
    assert TokenAt(-1).init(key, (-1, 5, 3))[0] == (-1, 3)


def test_random_shift_moves_whole_images_and_is_the_identity_in_eval(key):
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1) + 1
    y, _ = RandomShift(1).apply({}, {}, jnp.asarray(x), key=key, train=True)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for n in range(2):  # each image is x shifted by some (dy, dx) in {-1, 0, 1}^2, zeros shifted in
        assert any(np.array_equal(y[n], padded[n, 1 - dy:7 - dy, 1 - dx:7 - dx]) for dy in (-1, 0, 1)
                   for dx in (-1, 0, 1))
    assert RandomShift(1).apply({}, {}, x, train=False)[0] is x


@pytest.mark.parametrize("make, args, message", [
    (lambda: TokenAt(4), ((-1, 4, 3),), r"TokenAt: index \(=4\) out of range for T = 4 positions"),
    (lambda: TokenAt(1.0), (), r"TokenAt: index must be an int, got index=1.0"),
    (lambda: ClassToken(), ((-1, 4),), r"ClassToken: expected input of rank 3 \(N, T, F\), got shape \(-1, 4\)"),
    (lambda: RandomShift(-1), (), r"RandomShift: max_shift must be an integer >= 0, got max_shift=-1"),
    (lambda: RandomShift(2), ((-1, 28, 28),), r"RandomShift: expected input of rank 4 \(N, H, W, C\)"),
])
def test_errors_name_the_argument(make, args, message):
    with pytest.raises(ValueError, match=message):
        layer = make()
        layer.init(jax.random.PRNGKey(0), *args)


def test_random_shift_in_training_needs_a_key():
    with pytest.raises(ValueError, match="RandomShift: train=True needs a PRNG key, got key=None"):
        RandomShift(1).apply({}, {}, jnp.ones((1, 4, 4, 1)), train=True)

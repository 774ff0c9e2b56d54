"""Activation layers: elementwise nonlinearities, softmax and log-softmax.

Elementwise layers are `elementwise(name, forward, derivative)`: the forward `y = f(x)` and its
derivative `f'(x)` (written with `y` where that is cheaper) sit on adjacent lines, and the pullback is
`dx = dy * f'(x)`. Residuals: x and y. Every layer maps any shape to the same shape; integer and boolean
inputs are promoted to float32 (`as_float`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from purenet import ops
from purenet._checks import as_float, check_bool, check_real, fail, is_int
from purenet.core import Layer, elementwise, positionwise, stateless

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


def Relu() -> Layer:
    """y = max(x, 0); derivative 1 where x > 0, else 0. Shapes: any -> same."""
    return elementwise("Relu",
                       lambda x: jnp.maximum(x, 0),
                       lambda x, y: (x > 0).astype(x.dtype))


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """y = x where x >= 0, else negative_slope * x. Shapes: any -> same."""
    slope = check_real("LeakyRelu", "negative_slope", negative_slope, finite=True)
    return elementwise("LeakyRelu",
                       lambda x: jnp.where(x >= 0, x, slope * x),
                       lambda x, y: jnp.where(x >= 0, 1.0, slope).astype(x.dtype))


def Elu(alpha: float = 1.0) -> Layer:
    """y = x where x > 0, else alpha * (exp(x) - 1); derivative 1, else y + alpha. Shapes: any -> same."""
    alpha = check_real("Elu", "alpha", alpha, finite=True)
    # expm1 of min(x, 0): the unused branch never overflows, so no inf * 0 in any derivative.
    return elementwise("Elu",
                       lambda x: jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0))),
                       lambda x, y: jnp.where(x > 0, 1.0, y + alpha).astype(x.dtype))


def _gelu_tanh(x):
    return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)))


def _gelu_tanh_derivative(x, y):
    del y
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)


def _gelu_erf(x):
    return 0.5 * x * (1 + lax.erf(x * _INV_SQRT_2))


def _gelu_erf_derivative(x, y):
    del y  # Phi(x) + x * phi(x)
    return 0.5 * (1 + lax.erf(x * _INV_SQRT_2)) + x * jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI


def Gelu(approximate: bool = True) -> Layer:
    """y = x * Phi(x): the tanh approximation when `approximate`, else the exact erf form.
    Shapes: any -> same."""
    check_bool("Gelu", "approximate", approximate)
    if approximate:
        return elementwise("Gelu", _gelu_tanh, _gelu_tanh_derivative)
    return elementwise("Gelu", _gelu_erf, _gelu_erf_derivative)


def Sigmoid() -> Layer:
    """y = 1 / (1 + exp(-x)); derivative y * (1 - y). Shapes: any -> same."""
    return elementwise("Sigmoid",
                       lambda x: jax.nn.sigmoid(x),
                       lambda x, y: y * (1 - y))


def Tanh() -> Layer:
    """y = tanh(x); derivative 1 - y^2. Shapes: any -> same."""
    return elementwise("Tanh",
                       lambda x: jnp.tanh(x),
                       lambda x, y: 1 - y * y)


def Softplus() -> Layer:
    """y = log(1 + exp(x)) (as logaddexp(x, 0)); derivative sigmoid(x) = 1 - exp(-y). Shapes: any -> same."""
    return elementwise("Softplus",
                       lambda x: jnp.logaddexp(x, 0.0),
                       lambda x, y: -jnp.expm1(-y))


def Silu() -> Layer:
    """y = x * sigmoid(x) (swish); derivative s * (1 + x * (1 - s)), s = sigmoid(x). Shapes: any -> same."""

    def derivative(x, y):
        del y
        s = jax.nn.sigmoid(x)
        return s * (1 + x * (1 - s))

    return elementwise("Silu",
                       lambda x: x * jax.nn.sigmoid(x),
                       derivative)


def _along_axis(name: str, axis, forward, pullback) -> Layer:
    """A parameter-free layer `y = forward(x, axis)` whose pullback needs only y:
    `dx = pullback(y, dy, axis)`. Residuals: y only. Decodes position by position when axis is -1."""
    if not is_int(axis):
        fail(name, f"axis must be an int, got axis={axis!r}")

    def init(key, in_shape):
        del key
        rank = len(in_shape)
        if not -rank <= axis < rank:
            fail(name, f"axis={axis} is out of range for input of rank {rank}, shape {tuple(in_shape)}")
        return in_shape, {}

    def apply(params, x):
        del params
        return forward(as_float(x), axis)

    def vjp(params, x):
        y = apply(params, x)
        return y, lambda dy: ({}, pullback(y, dy, axis))

    return stateless(name, init, apply, vjp, decode=positionwise(apply) if axis == -1 else None)


def Softmax(axis: int = -1) -> Layer:
    """y = exp(x) / sum(exp(x)) along `axis` (max-shifted); dx = y * (dy - sum(dy * y)).
    Shapes: any -> same."""
    return _along_axis("Softmax", axis, ops.softmax, ops.softmax_pullback)


def LogSoftmax(axis: int = -1) -> Layer:
    """y = x - log(sum(exp(x))) along `axis` (max-shifted); dx = dy - exp(y) * sum(dy).
    Shapes: any -> same."""
    return _along_axis("LogSoftmax", axis, ops.log_softmax, ops.log_softmax_pullback)


_BY_NAME = {
    "relu": Relu,
    "leaky_relu": LeakyRelu,
    "elu": Elu,
    "gelu": Gelu,  # the tanh approximation (GPT-2's "gelu_new")
    "gelu_exact": lambda: Gelu(approximate=False),  # the erf form (BERT's and ViT's "gelu")
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softplus": Softplus,
    "silu": Silu,
    "softmax": Softmax,
    "log_softmax": LogSoftmax,
}
ACTIVATION_NAMES = tuple(sorted(_BY_NAME))  # what `Activation(name)` accepts


def Activation(name: str) -> Layer:
    """The activation layer called `name` ("relu", "gelu", "softmax", ...), with default settings."""
    if not isinstance(name, str) or name not in _BY_NAME:
        fail("Activation", f"unknown activation {name!r}; known: {', '.join(ACTIVATION_NAMES)}")
    return _BY_NAME[name]()

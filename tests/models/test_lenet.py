"""LeNet-5 and the MLP of the zoo: named layers, output shapes, and the whole model's handwritten
gradient against jax.grad on a small batch."""

import jax
import jax.numpy as jnp
import pytest

from purenet.check import check_model
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.models import CLASSIC, LeNetConfig, lenet5, mlp
from purenet.precision import Policy


@pytest.mark.parametrize("config, dtype", [(LeNetConfig(), jnp.float64), (CLASSIC, jnp.float32)],
                         ids=["demo-f64", "classic-f32"])
def test_lenet5_gradient_equals_jax(config, dtype, key):
    model = lenet5(config)
    out_shape, params, state = init_model(model, key, (-1, 28, 28, 1), dtype=dtype)
    assert out_shape == (-1, 10) and params["conv1"]["w"].shape == (5, 5, 1, 6)
    assert params["fc1"]["w"].shape == (400, 120)
    x = jax.random.normal(key, (2, 28, 28, 1), dtype)
    report = check_model(model, softmax_cross_entropy(), params, state, x, jnp.array([3, 7]))
    assert all(e.max_rel <= e.rtol for e in report.values())


@pytest.mark.parametrize("config, compute", [(LeNetConfig(), jnp.bfloat16), (LeNetConfig(), jnp.float16),
                                             (LeNetConfig(algorithm="xla"), jnp.bfloat16)],
                         ids=["demo-bf16", "demo-f16", "conv1-xla-bf16"])
def test_lenet5_gradient_under_a_policy_equals_jax(config, compute, key):
    """float32 params, forward and pullback in `compute`, against the bare model in float64 (tests/README.md)."""
    model = lenet5(config)
    _, params, state = init_model(model, key, (-1, 28, 28, 1))
    x = jax.random.normal(key, (4, 28, 28, 1), jnp.float32)
    report = check_model(model, softmax_cross_entropy(), params, state, x, jnp.array([3, 7, 0, 9]),
                         policy=Policy(compute_dtype=compute))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_mlp_names_its_layers(key):
    out_shape, params, _ = mlp((8, 6), 3).init(key, (-1, 5))
    assert out_shape == (-1, 3) and set(params) == {"dense0", "act0", "dense1", "act1", "head"}
    assert set(mlp((), 3).init(key, (-1, 5))[1]) == {"head"}

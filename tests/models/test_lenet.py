"""LeNet-5 and the MLP of the zoo: named layers, output shapes, and the whole model's handwritten
gradient against jax.grad on a small batch."""

import jax
import jax.numpy as jnp
import pytest

from purenet.check import check_model
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.models import CLASSIC, LeNetConfig, lenet5, mlp


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


def test_mlp_names_its_layers(key):
    out_shape, params, _ = mlp((8, 6), 3).init(key, (-1, 5))
    assert out_shape == (-1, 3) and set(params) == {"dense0", "act0", "dense1", "act1", "head"}
    assert set(mlp((), 3).init(key, (-1, 5))[1]) == {"head"}

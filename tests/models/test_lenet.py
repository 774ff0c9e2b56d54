"""LeNet-5 and the MLP of the zoo: named layers, output shapes, and the whole model's handwritten
gradient against jax.grad on a small batch, bare and under bfloat16 and float16 policies."""

import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model
from purenet.losses import softmax_cross_entropy
from purenet.models import CLASSIC, LeNetConfig, lenet5, mlp
from purenet.precision import Policy
from tests.helpers import random_init

# conv1 sees one channel: on the CPU it runs as a sum over the kernel's taps, a graph that grows with
# them (25 for a 5x5 kernel, 9 for a 3x3); the checks below take 3x3 kernels, the code paths of
# LeNetConfig() and CLASSIC otherwise. Both layouts' kernels as they are: test_classic_and_demo_layouts.
DEMO = LeNetConfig(kernels=(3, 3))  # conv1 unpadded: the per-tap kernel gradient
LECUN = CLASSIC._replace(kernels=(3, 3))  # conv1 padded 'SAME': lax.conv's kernel gradient


def test_classic_and_demo_layouts():
    for config, fc1 in ((LeNetConfig(), 400), (CLASSIC, 400), (DEMO, 16 * 5 * 5), (LECUN, 16 * 6 * 6)):
        out_shape, params, _ = random_init(lenet5(config), (2, 28, 28, 1))
        assert out_shape == (2, 10) and params["conv1"]["w"].shape == (*config.kernels[:1] * 2, 1, 6)
        assert params["fc1"]["w"].shape == (fc1, 120)


def test_lenet5_gradient_equals_jax():  # float64 and float32 at one point
    """LeCun's layout: conv1 padded 'SAME', conv2 'VALID' (lax.conv). The demo's layout (conv1 unpadded)
    is the policy rows' below; both convolutions' forms in float64 and float32 one by one:
    tests/layers/cases_conv.py."""
    model = lenet5(LECUN)
    _, params, state = random_init(model, (2, 28, 28, 1))
    x = np.random.default_rng(1).standard_normal((2, 28, 28, 1)).astype(np.float32)
    report = check_model(model, softmax_cross_entropy(), params, state, x, np.array([3, 7]),
                         dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())


# conv1 by lax.conv (algorithm="xla") under bfloat16: conv2 takes that path in both rows, and
# tests/test_registry.py's bfloat16 row conv2d-c1-xla checks it with one input channel.
@pytest.mark.parametrize("compute", [jnp.bfloat16, jnp.float16], ids=["demo-bf16", "demo-f16"])
def test_lenet5_gradient_under_a_policy_equals_jax(compute):
    """float32 params, forward and pullback in `compute`, against the bare model in float64 (tests/README.md)."""
    model = lenet5(DEMO)
    _, params, state = random_init(model, (4, 28, 28, 1))
    x = np.random.default_rng(0).standard_normal((4, 28, 28, 1)).astype(np.float32)
    report = check_model(model, softmax_cross_entropy(), params, state, x, np.array([3, 7, 0, 9]),
                         policy=Policy(compute_dtype=compute))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_mlp_names_its_layers():
    out_shape, params, _ = random_init(mlp((8, 6), 3), (-1, 5))
    assert out_shape == (-1, 3) and set(params) == {"dense0", "act0", "dense1", "act1", "head"}
    assert set(random_init(mlp((), 3), (-1, 5))[1]) == {"head"}

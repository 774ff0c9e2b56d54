"""ResNet of the zoo: named params, projection shortcuts where the stride or width changes, the whole
model's handwritten gradient against jax.grad with BatchNorm in training mode (batch statistics), and
config errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model
from purenet.losses import softmax_cross_entropy
from purenet.models import TORCHVISION_RESNET18, ResNetConfig, basic_block, resnet
from tests.helpers import random_init

# Stage 0 keeps the stem's width (identity shortcut), stage 1 halves the size (projection shortcut).
TINY = ResNetConfig(widths=(3, 4), blocks=(1, 1), num_classes=5)


def test_whole_model_gradient_equals_jax_in_training_mode():  # float64 and float32 at one point
    model = resnet(TINY)
    out_shape, params, state = random_init(model, (3, 6, 6, 2))
    first, second = params["stages"][0][0]["sum"], params["stages"][1][0]["sum"]
    assert out_shape == (3, 5) and first["shortcut"] == {} and second["shortcut"]["conv"]["w"].shape == (1, 1, 3, 4)
    assert second["main"]["conv1"]["w"].shape == (3, 3, 3, 4) and "b" not in second["main"]["conv1"]
    assert state["stages"][1][0]["sum"]["shortcut"]["bn"]["mean"].shape == (4,)
    x = np.random.default_rng(1).standard_normal((3, 6, 6, 2)).astype(np.float32)  # an odd batch
    report = check_model(model, softmax_cross_entropy(), params, state, x, np.array([0, 4, 2]), train=True,
                         dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_torchvision_form_pools_its_stem():
    """torchvision's ResNet-18 (7x7/2 stem, 3x3/2 max pool, PyTorch's padding), two stages: an 11x11 input
    is 6x6 after the stem (symmetric padding 3), 3x3 after the pool, 2x2 after the strided stage (SAME
    would give the same sizes with the extra row on one side only). Its padding, outputs, running
    statistics and whole-model gradient in training mode against torchvision's (float64 within 1e-10,
    float32 by the suite's rule): the loaded ResNet-18 of tests/interop (40x40 images, where symmetric
    padding and SAME differ)."""
    config = TORCHVISION_RESNET18._replace(widths=(2, 3), blocks=(1, 1), num_classes=4)
    out_shape, params, state = random_init(resnet(config), (3, 11, 11, 3))
    assert out_shape == (3, 4) and params["stem"]["conv"]["w"].shape == (7, 7, 3, 2) and "pool" in params["stem"]
    assert params["stages"][1][0]["sum"]["shortcut"]["conv"]["w"].shape == (1, 1, 2, 3)


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"resnet: padding must be one of \('SAME', 'symmetric'\), got padding='same'"):
        resnet(ResNetConfig(padding="same"))
    with pytest.raises(ValueError, match=r"resnet: widths \(=\(8, 16\)\) and blocks \(=\(1,\)\) need one entry"):
        resnet(ResNetConfig(widths=(8, 16), blocks=(1,)))
    with pytest.raises(ValueError, match=r"resnet: blocks must be positive integers, got blocks=\(1, 0\)"):
        resnet(ResNetConfig(widths=(8, 16), blocks=(1, 0)))
    with pytest.raises(ValueError, match=r"basic_block: strides \(=2\) != 1 needs a projection shortcut"):
        basic_block(8, strides=2)

"""MiniViT of the zoo: named params, the whole model's handwritten gradient against jax.grad, and config
errors. (Dropout's pullback is the registry's; here it would add a second of compilation per dtype.)"""

import jax
import jax.numpy as jnp
import pytest

from purenet.check import check_model
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.models import ViTConfig, vit

TINY = ViTConfig(image_size=8, patch_size=4, d_model=8, layers=1, heads=2, hidden=12, num_classes=5)


def test_whole_model_gradient_equals_jax(key):  # float64 and float32 at one point
    model = vit(TINY)
    out_shape, params, state = init_model(model, key, (-1, 8, 8, 1))
    assert out_shape == (-1, 5) and params["patches"]["w"].shape == (4, 4, 1, 8)
    assert params["cls"]["token"].shape == (8,) and params["pos"]["w"].shape == (5, 8)  # 4 patches + class token
    assert params["blocks"][0]["attn"]["w_q"].shape == (8, 8) and params["head"]["w"].shape == (8, 5)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1), jnp.float32)
    report = check_model(model, softmax_cross_entropy(), params, state, x, jnp.array([0, 4, 2]), dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"vit: image_size \(=28\) must be a multiple of patch_size \(=5\)"):
        vit(ViTConfig(patch_size=5))
    with pytest.raises(ValueError, match=r"vit: d_model \(=10\) must be divisible by heads \(=4\)"):
        vit(ViTConfig(d_model=10))
    with pytest.raises(ValueError, match=r"vit: layers must be positive integers, got layers=0"):
        vit(ViTConfig(layers=0))

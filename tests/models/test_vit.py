"""MiniViT of the zoo: named params and config errors. Its whole-model gradient: the loaded ViT of
tests/interop (this `vit`, two blocks, its outputs, loss and every parameter's gradient against
PyTorch's, float64 within 1e-10 and float32 by the suite's rule); this config's differences from that one
are layer options (the tanh GELU, LayerNorm's epsilon), whose pullbacks the registry checks against JAX
in both dtypes. (Dropout's pullback is the registry's too.)"""

import pytest

from purenet.models import ViTConfig, vit
from tests.helpers import random_init

TINY = ViTConfig(image_size=8, patch_size=4, d_model=8, layers=1, heads=2, hidden=12, num_classes=5)


def test_named_params_and_shapes():
    out_shape, params, _ = random_init(vit(TINY), (3, 8, 8, 1))
    assert out_shape == (3, 5) and params["patches"]["w"].shape == (4, 4, 1, 8)
    assert params["cls"]["token"].shape == (8,) and params["pos"]["w"].shape == (5, 8)  # 4 patches + class token
    assert params["blocks"][0]["attn"]["w_q"].shape == (8, 8) and params["head"]["w"].shape == (8, 5)


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"vit: image_size \(=28\) must be a multiple of patch_size \(=5\)"):
        vit(ViTConfig(patch_size=5))
    with pytest.raises(ValueError, match=r"vit: d_model \(=10\) must be divisible by heads \(=4\)"):
        vit(ViTConfig(d_model=10))
    with pytest.raises(ValueError, match=r"vit: layers must be positive integers, got layers=0"):
        vit(ViTConfig(layers=0))

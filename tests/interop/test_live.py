"""The reference comparisons regenerated live, where torch and transformers are installed (skipped
otherwise): tests/data/make_interop_references.py builds each reference model afresh, purenet loads what
the reference saves and matches its outputs, loss and gradients in float32 and float64; and what
purenet saves loads back into the reference (`from_pretrained`, torchvision's `load_state_dict(strict=True)`)
and computes the same outputs."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="the live comparison needs torch (pip install torch==2.13.0)")
pytest.importorskip("transformers", reason="the live comparison needs transformers")

import torch  # noqa: E402

from tests.data import make_interop_references as generator  # noqa: E402
from tests.interop import references as R  # noqa: E402


def _saved(arch, tmp_path):
    from safetensors.numpy import save_file

    model, config, inputs = generator.build(arch)
    path = tmp_path / f"{arch}.safetensors"
    save_file(generator.saved_tensors(model), str(path), metadata={"format": "pt", "config": json.dumps(config)})
    return model, config, inputs, path


@pytest.mark.parametrize("arch", R.ARCHITECTURES)
def test_live_reference_matches(arch, tmp_path):
    model, _, inputs, path = _saved(arch, tmp_path)
    ours_model, params, state = R.LOADERS[arch](path)
    config = R.CONFIGS[arch](path)
    reference = generator.reference(arch, model, inputs)
    ours64 = R.ours(arch, config, ours_model, params, state, inputs, jnp.float64)
    ours32 = R.ours(arch, config, ours_model, params, state, inputs, jnp.float32)
    print(arch, {k: f"{v:.1e}" for k, v in R.compare(arch, ours64, ours32, reference).items()})


@pytest.mark.parametrize("arch", R.ARCHITECTURES)
def test_what_purenet_saves_loads_into_the_reference(arch, tmp_path):
    import transformers

    model, reference_config, inputs, path = _saved(arch, tmp_path)
    _, params, state = R.LOADERS[arch](path)
    out = tmp_path / "export"
    if arch == "resnet18":
        R.SAVERS[arch](out / "model.safetensors", params, state, R.CONFIGS[arch](path))
        from safetensors.torch import load_file

        reloaded = generator.ResNet(**reference_config)
        reloaded.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
        x = torch.from_numpy(inputs["images"]).float()
    else:
        R.SAVERS[arch](out / "model.safetensors", params, state, R.CONFIGS[arch](path), config_json=True)
        cls = {"gpt2": transformers.GPT2LMHeadModel, "bert": transformers.BertForMaskedLM,
               "vit": transformers.ViTForImageClassification}[arch]
        reloaded = cls.from_pretrained(out)
        x = (torch.from_numpy(inputs["pixel_values"]) if arch == "vit" else torch.from_numpy(inputs["ids"]))
    model.eval(), reloaded.eval()
    with torch.no_grad():
        if arch == "bert":
            kwargs = dict(attention_mask=torch.from_numpy(inputs["attention_mask"]).long(),
                          token_type_ids=torch.from_numpy(inputs["token_type_ids"]))
            want, got = model(x, **kwargs).logits, reloaded(x, **kwargs).logits
        else:
            want, got = model(x), reloaded(x)
            want, got = getattr(want, "logits", want), getattr(got, "logits", got)
    np.testing.assert_array_equal(got.numpy(), want.numpy())  # the same weights, the same program

"""purenet.interop against the reference fixtures (tests/data/interop/, written by
tests/data/make_interop_references.py with torch and transformers; no torch here): each architecture
loads from its reference's safetensors and gives the reference's outputs, loss and gradients (float32
and float64); a load -> save -> load round trip is bit-identical; names, shapes and dtypes are checked
with messages naming the tensor; writes are atomic."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import interop
from purenet.interop import _tensors
from purenet.models import GPTConfig
from tests.interop import references as R


@pytest.mark.parametrize("arch", R.ARCHITECTURES)
def test_outputs_loss_and_gradients_equal_the_reference(arch):
    model, params, state = R.LOADERS[arch](R.weights(arch))
    config, reference = R.CONFIGS[arch](R.weights(arch)), R.fixture(arch)
    inputs = R.inputs_of(reference)
    ours64 = R.ours(arch, config, model, params, state, inputs, jnp.float64)
    ours32 = R.ours(arch, config, model, params, state, inputs, jnp.float32)
    figures = R.compare(arch, ours64, ours32, reference)
    print(arch, {k: f"{v:.1e}" for k, v in figures.items()})


def _equal_trees(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("arch", R.ARCHITECTURES)
def test_load_save_load_is_bit_identical(arch, tmp_path):
    path = R.weights(arch)
    _, params, state = R.LOADERS[arch](path)
    config = R.CONFIGS[arch](path)
    R.SAVERS[arch](tmp_path / "out.safetensors", params, state, config)
    _, params2, state2 = R.LOADERS[arch](tmp_path / "out.safetensors")
    _equal_trees(params, params2)
    _equal_trees(state, state2)
    original, saved = R.read(path), R.read(tmp_path / "out.safetensors")
    assert set(saved) == set(original)  # the reference's own names, every one (num_batches_tracked too)
    for name, a in original.items():
        assert saved[name].dtype == a.dtype and np.array_equal(saved[name], a), name
    assert R.CONFIGS[arch](tmp_path / "out.safetensors") == config  # the config rides in the metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no temporary file left


def test_configs_come_from_shapes_and_metadata():
    assert interop.gpt2_config(R.TINY_GPT2) == GPTConfig(vocab_size=76, context=32, layers=2, d_model=16, heads=2,
                                                         hidden=32, head_bias=False)
    bert = interop.bert_config(R.weights("bert"))
    assert (bert.vocab_size, bert.layers, bert.heads, bert.hidden, bert.eps, bert.pooler) == (40, 2, 2, 32, 1e-12, True)
    vit = interop.vit_config(R.weights("vit"))
    assert (vit.image_size, vit.patch_size, vit.d_model, vit.num_classes, vit.activation) == (8, 4, 16, 5, "gelu_exact")
    resnet = interop.resnet18_config(R.weights("resnet18"))
    assert (resnet.widths, resnet.blocks, resnet.num_classes, resnet.stem_pool) == ((2, 4, 4, 8), (2, 2, 2, 2), 5, True)


# The loaded GPT-2 is the zoo's `gpt` (load -> save -> load above: the same tree); its decode steps equal
# its apply: tests/models/test_gpt.py::test_decode_steps_equal_apply (a tied GPT of two blocks).


# ------------------------------------------------------------------------------- the file's forms


def _write(path, tensors, metadata=None):
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)


def test_a_hub_directory_reads_with_its_config_json(tmp_path):
    """The hub's gpt2: names without "transformer.", causal-mask buffers, the tied lm_head stored, no
    metadata: the heads come from config.json beside the file."""
    tensors = R.read(R.TINY_GPT2)
    hub = {name.removeprefix("transformer."): a for name, a in tensors.items()}
    hub |= {"h.0.attn.bias": np.tril(np.ones((1, 1, 32, 32), np.float32)), "h.0.attn.masked_bias": np.array(-1e4, np.float32),
            "lm_head.weight": tensors["transformer.wte.weight"]}
    _write(tmp_path / "model.safetensors", hub)
    with pytest.raises(ValueError, match=r"heads is not in the file's metadata nor in a config.json .* pass heads="):
        interop.load_gpt2(tmp_path)
    assert interop.load_gpt2(tmp_path, heads=2)[0].name == "TiedLM"
    (tmp_path / "config.json").write_text(json.dumps({"n_head": 2, "model_type": "gpt2"}))
    _, params, _ = interop.load_gpt2(tmp_path)
    _equal_trees(params, interop.load_gpt2(R.TINY_GPT2)[1])
    hub["lm_head.weight"] = hub["lm_head.weight"] + 1
    _write(tmp_path / "model.safetensors", hub)
    with pytest.raises(ValueError, match=r"'lm_head.weight' should be tied to 'transformer.wte.weight'"):
        interop.load_gpt2(tmp_path)


def test_bert_reads_the_original_layernorm_names_and_ignores_what_it_is_told(tmp_path):
    tensors = R.read(R.weights("bert"))
    old = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): a
           for name, a in tensors.items()}
    old |= {"cls.seq_relationship.weight": np.zeros((2, 16), np.float32), "cls.seq_relationship.bias": np.zeros(2, np.float32)}
    _write(tmp_path / "bert.safetensors", old, {"config": json.dumps({"num_attention_heads": 2})})
    with pytest.raises(ValueError, match=r"unknown 2: cls.seq_relationship.bias, cls.seq_relationship.weight .*ignore="):
        interop.load_bert(tmp_path / "bert.safetensors")
    _, params, _ = interop.load_bert(tmp_path / "bert.safetensors", ignore=("cls.seq_relationship.",))
    _equal_trees(params, interop.load_bert(R.weights("bert"))[1])


def _edited(tmp_path, arch, edit):
    from safetensors import safe_open

    tensors = R.read(R.weights(arch))
    with safe_open(str(R.weights(arch)), "np") as f:
        metadata = f.metadata()
    edit(tensors)
    _write(tmp_path / "edited.safetensors", tensors, metadata)
    return tmp_path / "edited.safetensors"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update({"vit.encoder.layer.1.output.dense.weight": np.zeros((16, 30), np.float32)}),
     r"load_vit: tensor 'vit.encoder.layer.1.output.dense.weight' has shape \(16, 30\), expected \(16, 32\)"),
    (lambda t: t.update({"vit.layernorm.bias": np.zeros(16, np.float16)}),
     r"load_vit: tensor 'vit.layernorm.bias' has dtype float16, unlike 'vit.embeddings.cls_token' \(float32\)"),
    (lambda t: t.update({"classifier.bias": np.zeros(5, np.int32)}),
     r"load_vit: tensor 'classifier.bias' has dtype int32, expected a float"),
    (lambda t: (t.pop("vit.encoder.layer.0.layernorm_after.bias"), t.update({"vit.pooler.dense.bias": np.zeros(16)})),
     r"load_vit: the file does not hold this architecture's tensors: missing 1: "
     r"vit.encoder.layer.0.layernorm_after.bias; unknown 1: vit.pooler.dense.bias"),
], ids=["shape", "dtype", "integer", "missing-and-unknown"])
def test_a_mismatch_names_the_tensor(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        interop.load_vit(_edited(tmp_path, "vit", edit))


def test_resnet_files_of_other_blocks_are_refused(tmp_path):
    path = _edited(tmp_path, "resnet18", lambda t: t.update({"layer1.0.conv3.weight": np.zeros((8, 2, 1, 1), np.float32)}))
    with pytest.raises(ValueError, match=r"load_resnet18: the file holds Bottleneck blocks \(conv3\)"):
        interop.load_resnet18(path)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_gpt2: no safetensors file at '.*nothing.safetensors'"):
        interop.load_gpt2(tmp_path / "nothing.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(R.TINY_GPT2.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"load_gpt2: '.*broken.safetensors' is not a readable safetensors file"):
        interop.load_gpt2(tmp_path / "broken.safetensors")


def test_a_failed_save_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    shutil.copy(R.TINY_GPT2, path)
    _, params, state = interop.load_gpt2(path)
    config = interop.gpt2_config(path)
    with pytest.raises(ValueError, match=r"save_gpt2: GPT-2 has a tied head without bias"):
        interop.save_gpt2(path, params, state, config._replace(head_bias=True))

    def interrupted(*args, **kwargs):  # the serialized bytes are lost mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.numpy.save", lambda tensors, metadata=None: b"partial")
    monkeypatch.setattr(_tensors, "atomic_write", _failing(_tensors.atomic_write, interrupted))
    with pytest.raises(KeyboardInterrupt):
        interop.save_gpt2(path, params, state, config)
    assert path.read_bytes() == R.TINY_GPT2.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def _failing(atomic_write, interrupt):
    """atomic_write whose file raises after the first write."""
    import contextlib

    @contextlib.contextmanager
    def wrapped(path, **kwargs):
        with atomic_write(path, **kwargs) as f:
            class Half:
                def write(self, data):
                    f.write(data[: len(data) // 2])
                    interrupt()

            yield Half()

    return wrapped

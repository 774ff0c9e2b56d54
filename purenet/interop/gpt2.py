"""GPT-2 as Hugging Face's `GPT2LMHeadModel`, in and out of `purenet.models.gpt`.

The reference: pre-LN blocks, learned positions, the tanh GELU ("gelu_new"), LayerNorm eps 1e-5, q, k
and v fused in one `Conv1D` stored (in, out) as purenet's `w_qkv` is, and a head tied to the token table
without a bias. Names are `GPT2LMHeadModel.state_dict()`'s; a file without the "transformer." prefix (the
hub's gpt2/model.safetensors) reads too, its causal-mask buffers `h.{i}.attn.bias` / `.masked_bias` are
not parameters and are skipped, and an `lm_head.weight` must equal `wte.weight` (they are tied).
"""

from __future__ import annotations

import pathlib

from purenet.interop import _tensors as t
from purenet.models.gpt import GPTConfig, gpt

_OWNER = "load_gpt2"
_BLOCK = {"ln_1.weight": ("norm1", "gamma"), "ln_1.bias": ("norm1", "beta"),
          "attn.c_attn.weight": ("attn", "w_qkv"), "attn.c_attn.bias": ("attn", "b_qkv"),
          "attn.c_proj.weight": ("attn", "w_o"), "attn.c_proj.bias": ("attn", "b_o"),
          "ln_2.weight": ("norm2", "gamma"), "ln_2.bias": ("norm2", "beta"),
          "mlp.c_fc.weight": ("ff", "w_in"), "mlp.c_fc.bias": ("ff", "b_in"),
          "mlp.c_proj.weight": ("ff", "w_out"), "mlp.c_proj.bias": ("ff", "b_out")}


def _canonical(name: str) -> str:
    return name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name


def _buffers(name: str) -> bool:
    return name.endswith((".attn.bias", ".attn.masked_bias"))


def _entries(config: GPTConfig) -> list:
    body = ("params", "body")
    entries = [t.Entry("transformer.wte.weight", ("params", "embed", "w")),
               t.Entry("transformer.wpe.weight", (*body, "pos", "w"))]
    for i in range(config.layers):
        entries += [t.Entry(f"transformer.h.{i}.{name}", (*body, "blocks", i, *path))  # Conv1D: already (in, out)
                    for name, path in _BLOCK.items()]
    return entries + [t.Entry("transformer.ln_f.weight", (*body, "norm", "gamma")),
                      t.Entry("transformer.ln_f.bias", (*body, "norm", "beta"))]


def _config(shapes: dict, reference: dict, overrides: dict) -> GPTConfig:
    vocab, d_model = t.shape_of(_OWNER, shapes, "transformer.wte.weight")
    context = t.shape_of(_OWNER, shapes, "transformer.wpe.weight")[0]
    layers = t.count(shapes, r"transformer\.h\.{i}\..*")
    hidden = t.shape_of(_OWNER, shapes, "transformer.h.0.mlp.c_fc.weight")[1]
    eps = t.setting(_OWNER, reference, overrides, "eps", "layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        t.fail(_OWNER, f"layer_norm_epsilon={eps}: purenet's GPT takes LayerNorm's eps 1e-5 only")
    for flag, value in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                        ("scale_attn_weights", True)):
        if reference.get(flag, value) != value:
            t.fail(_OWNER, f"{flag}={reference[flag]} is not supported (GPT-2's own value is {value})")
    return GPTConfig(vocab_size=vocab, context=context, layers=layers, d_model=d_model,
                     heads=int(t.setting(_OWNER, reference, overrides, "heads", "n_head")), hidden=hidden,
                     activation=t.activation(_OWNER, reference.get("activation_function", "gelu_new")),
                     head_bias=False)


def _reference_config(config: GPTConfig, shapes: dict) -> dict:
    del shapes
    if not (config.tie_weights and config.pre_ln and config.fused_qkv) or config.head_bias:
        t.fail("save_gpt2", "GPT-2 has a tied head without bias, pre-LN blocks and a fused qkv: got "
                            f"tie_weights={config.tie_weights}, head_bias={config.head_bias}, pre_ln={config.pre_ln}, "
                            f"fused_qkv={config.fused_qkv}")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
            "n_positions": config.context, "n_embd": config.d_model, "n_layer": config.layers,
            "n_head": config.heads, "n_inner": config.hidden or 4 * config.d_model,
            "activation_function": t.reference_activation(config.activation), "layer_norm_epsilon": 1e-5,
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": 0.0,
            "tie_word_embeddings": True,  # <|endoftext|> is GPT-2's last id (50256 of 50257)
            "bos_token_id": config.vocab_size - 1, "eos_token_id": config.vocab_size - 1}


GPT2 = t.Family(_OWNER, _canonical, _config, gpt, lambda config, shapes: (1, 1), _entries, _reference_config,
                aliases=lambda config: {"lm_head.weight": "transformer.wte.weight"}, buffers=_buffers)
"""GPT-2's `Family`: the table between `GPT2LMHeadModel`'s tensor names and `gpt`'s params."""

TINY_GPT2 = pathlib.Path(__file__).resolve().parents[1] / "data" / "tiny_gpt2.safetensors"
"""A tiny random GPT-2 (2 layers, 16 wide, 2 heads, 32 positions) over the 76 characters of the shipped
Shakespeare, as `GPT2LMHeadModel` saves it (purenet/data/TINY_GPT2.md): the guide's and the tests' model."""


def gpt2_config(path, *, heads: int | None = None) -> GPTConfig:
    """The `GPTConfig` of a GPT-2 safetensors file: sizes from its tensors' shapes, the head count from
    its metadata (files `save_gpt2` wrote) or the config.json beside it, else `heads`."""
    return t.read_config(GPT2, path, overrides={"heads": heads})


def load_gpt2(path, *, heads: int | None = None, ignore=(), dtype=None):
    """-> (model, params, state): `purenet.models.gpt` with GPT-2's weights from `path` (a
    safetensors file, or a directory holding model.safetensors and config.json). `heads` when the file
    does not say (no metadata, no config.json); `ignore`: name prefixes to leave out; `dtype`: cast to it
    (None: the file's). Fails naming the first tensor whose shape or dtype does not fit, and lists
    missing and unknown tensors. `gpt2_config(path)` gives the config (`save_gpt2` needs it)."""
    return t.load(GPT2, path, overrides={"heads": heads}, ignore=ignore, dtype=dtype)


def save_gpt2(path, params, state, config: GPTConfig, *, config_json: bool = False) -> None:
    """Write `params` under `GPT2LMHeadModel`'s names to the safetensors file `path` (atomically), with
    Hugging Face's config in its metadata; `config_json` also writes config.json beside it, so
    `GPT2LMHeadModel.from_pretrained(directory)` reads the directory."""
    t.save(GPT2, path, params, state, config, config_json=config_json)

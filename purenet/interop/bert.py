"""BERT as Hugging Face's `BertForMaskedLM` (with `BertModel`'s pooler), in and out of
`purenet.models.bert_mlm`.

The reference: post-LN blocks, token-type embeddings, LayerNorm eps 1e-12, the exact GELU, the MLM
transform and a decoder tied to the word embeddings with its own bias, and the pooler (tanh of a dense
layer on the first token) when the file has it. Names are `BertForMaskedLM.state_dict()`'s plus
`bert.pooler.dense.*`; the original checkpoints' LayerNorm names `gamma`/`beta` read as `weight`/`bias`,
`bert.embeddings.position_ids` is a buffer (skipped), and `cls.predictions.decoder.weight` / `.bias`, when
stored, must equal the word embeddings / `cls.predictions.bias` (they are tied). bert-base-uncased also
holds the next-sentence head: load it with `ignore=("cls.seq_relationship.",)`.
"""

from __future__ import annotations

from purenet.interop import _tensors as t
from purenet.models.bert_mlm import BertMLMConfig, bert_mlm

_OWNER = "load_bert"
_LAYER = {"attention.self.query": ("attn", "q"), "attention.self.key": ("attn", "k"),
          "attention.self.value": ("attn", "v"), "attention.output.dense": ("attn", "o"),
          "intermediate.dense": ("ff", "in"), "output.dense": ("ff", "out")}
_NORMS = {"attention.output.LayerNorm": "norm1", "output.LayerNorm": "norm2"}


def _canonical(name: str) -> str:
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _norm(name: str, path: tuple) -> list:
    return [t.Entry(f"{name}.weight", (*path, "gamma")), t.Entry(f"{name}.bias", (*path, "beta"))]


def _dense(name: str, path: tuple) -> list:
    return [t.Entry(f"{name}.weight", (*path, "w"), "linear"), t.Entry(f"{name}.bias", (*path, "b"))]


def _entries(config: BertMLMConfig) -> list:
    p, e = ("params",), "bert.embeddings."
    entries = [t.Entry(e + "word_embeddings.weight", (*p, "embed", "w")),
               t.Entry(e + "position_embeddings.weight", (*p, "pos", "w")),
               t.Entry(e + "token_type_embeddings.weight", (*p, "types", "w")), *_norm(e + "LayerNorm", (*p, "norm"))]
    for i in range(config.layers):
        block, name = (*p, "encoder", i), f"bert.encoder.layer.{i}."
        for part, (child, suffix) in _LAYER.items():
            entries += [t.Entry(f"{name}{part}.weight", (*block, child, "w_" + suffix), "linear"),
                        t.Entry(f"{name}{part}.bias", (*block, child, "b_" + suffix))]
        for part, norm in _NORMS.items():
            entries += _norm(name + part, (*block, norm))
    if config.pooler:
        entries += _dense("bert.pooler.dense", (*p, "pooler", "dense"))
    return entries + [*_dense("cls.predictions.transform.dense", (*p, "mlm", "dense")),
                      *_norm("cls.predictions.transform.LayerNorm", (*p, "mlm", "norm")),
                      t.Entry("cls.predictions.bias", (*p, "head", "b"))]


def _config(shapes: dict, reference: dict, overrides: dict) -> BertMLMConfig:
    vocab, d_model = t.shape_of(_OWNER, shapes, "bert.embeddings.word_embeddings.weight")
    if reference.get("position_embedding_type", "absolute") != "absolute":
        t.fail(_OWNER, f"position_embedding_type={reference['position_embedding_type']!r} is not supported "
                       f"(only 'absolute')")
    return BertMLMConfig(
        vocab_size=vocab, d_model=d_model,
        context=t.shape_of(_OWNER, shapes, "bert.embeddings.position_embeddings.weight")[0],
        type_vocab_size=t.shape_of(_OWNER, shapes, "bert.embeddings.token_type_embeddings.weight")[0],
        layers=t.count(shapes, r"bert\.encoder\.layer\.{i}\..*"),
        hidden=t.shape_of(_OWNER, shapes, "bert.encoder.layer.0.intermediate.dense.weight")[0],
        heads=int(t.setting(_OWNER, reference, overrides, "heads", "num_attention_heads")),
        eps=float(t.setting(_OWNER, reference, overrides, "eps", "layer_norm_eps", 1e-12)),
        activation=t.activation(_OWNER, reference.get("hidden_act", "gelu")),
        pooler="bert.pooler.dense.weight" in shapes)


def _reference_config(config: BertMLMConfig, shapes: dict) -> dict:
    del shapes
    return {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": config.vocab_size,
            "hidden_size": config.d_model, "num_hidden_layers": config.layers,
            "num_attention_heads": config.heads, "intermediate_size": config.hidden,
            "hidden_act": t.reference_activation(config.activation), "layer_norm_eps": config.eps,
            "max_position_embeddings": config.context, "type_vocab_size": config.type_vocab_size,
            "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.attention_dropout,
            "position_embedding_type": "absolute", "tie_word_embeddings": True}


BERT = t.Family(_OWNER, _canonical, _config, bert_mlm, lambda config, shapes: ((1, 1),) * 3, _entries,
                _reference_config,
                aliases=lambda config: {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                                        "cls.predictions.decoder.bias": "cls.predictions.bias"},
                buffers=lambda name: name == "bert.embeddings.position_ids")
"""BERT's `Family`: the table between `BertForMaskedLM`'s (and the pooler's) tensor names and `bert_mlm`'s params."""


def bert_config(path, *, heads: int | None = None, ignore=()) -> BertMLMConfig:
    """The `BertMLMConfig` of a BERT safetensors file: sizes (and whether it has a pooler) from its
    tensors, the head count, eps and activation from its metadata or the config.json beside it."""
    return t.read_config(BERT, path, overrides={"heads": heads}, ignore=ignore)


def load_bert(path, *, heads: int | None = None, ignore=(), dtype=None):
    """-> (model, params, state): `purenet.models.bert_mlm` with `BertForMaskedLM`'s weights from `path` (a
    safetensors file, or a directory holding model.safetensors and config.json); options as `load_gpt2`'s.
    The model returns (logits, pooled) when the file has the pooler."""
    return t.load(BERT, path, overrides={"heads": heads}, ignore=ignore, dtype=dtype)


def save_bert(path, params, state, config: BertMLMConfig, *, config_json: bool = False) -> None:
    """Write `params` under `BertForMaskedLM`'s names (and the pooler's) to `path`, atomically, Hugging
    Face's config in its metadata (and in config.json beside it with `config_json`)."""
    t.save(BERT, path, params, state, config, config_json=config_json)

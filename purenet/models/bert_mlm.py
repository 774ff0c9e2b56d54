"""BERT as Hugging Face's `BertForMaskedLM` (Devlin et al. 2018), with the pooler of `BertModel`: the
architecture `purenet.interop.load_bert` reads pretrained weights into.

Dimension letters: N batch, T positions, V vocabulary, F features (d_model), Y token types. Embeddings
e = w[ids] + types[type_ids] + positions[:T], then LayerNorm and dropout; post-LN encoder blocks whose
keys are restricted by the attention mask; the MLM transform (Dense F + exact GELU + LayerNorm) and a
decoder tied to the token table: logits = z @ w.T + b. The pooler reads the first token: pooled =
tanh(h[:, 0] @ w_p + b_p). The table w is used twice; its gradient is the sum of both uses, written out
in the pullback (the pattern of `tied.py`). Params {"embed": {"w": (V, F)}, "pos": {"w": (context, F)},
"types": {"w": (Y, F)}, "norm", "drop": {}, "encoder": (block, ...), "pooler": {"dense"} (with `pooler`), "mlm":
{"dense", "norm"}, "head": {"b": (V,)}}; state: the parts' (trees without leaves: every part is stateless).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_bool, check_positive, check_range, fail
from purenet.combinators import serial, taped
from purenet.core import Layer, is_shape
from purenet.layers import Dense, Dropout, Embedding, EncoderBlock, Gelu, LayerNorm, LearnedPositions, Tanh, TokenAt
from purenet.ops import bias_add, bias_grad, linear, linear_dw, linear_dx, lookup, lookup_dw


class BertMLMConfig(NamedTuple):
    """The hyperparameters of `bert_mlm` (the defaults: bert-base-uncased)."""

    vocab_size: int = 30522
    context: int = 512  # max_position_embeddings
    type_vocab_size: int = 2
    layers: int = 12
    d_model: int = 768
    heads: int = 12
    hidden: int = 3072  # intermediate_size
    eps: float = 1e-12  # every LayerNorm's (layer_norm_eps)
    activation: str = "gelu_exact"  # hidden_act "gelu" is the erf form
    dropout: float = 0.0  # on the embeddings and on every sub-layer's output (hidden_dropout_prob)
    attention_dropout: float = 0.0  # on the attention probabilities (attention_probs_dropout_prob)
    pooler: bool = True  # also return pooled = tanh(dense(h[:, 0]))


def _parts(x):
    """-> (ids, token_type_ids or None, attention_mask or None) of an input (or an in_shape)."""
    if isinstance(x, (tuple, list)) and not is_shape(x):
        if len(x) not in (2, 3):
            fail("BertMLM", f"expects ids, (ids, token_type_ids) or (ids, token_type_ids, attention_mask), "
                            f"got a structure of {len(x)}")
        return x[0], x[1], x[2] if len(x) == 3 else None
    return x, None, None


def bert_mlm(config: BertMLMConfig = BertMLMConfig()) -> Layer:
    """The model `config` describes (module docstring).

    Shapes: ids (N, T) int, or (ids, token_type_ids (N, T) int), or (ids, token_type_ids, attention_mask
    (N, T) bool, True = a token) -> logits (N, T, V), or (logits, pooled (N, F)) with `pooler`. No
    query attends to a masked key; a masked position's own output is computed but meaningless."""
    name = "BertMLM"
    for field in ("vocab_size", "context", "type_vocab_size", "layers", "d_model", "heads", "hidden"):
        check_positive(name, field, getattr(config, field))
    check_bool(name, "pooler", config.pooler)
    rate = check_range(name, "dropout", config.dropout, lambda r: 0 <= r < 1, "in [0, 1)")
    V, F, eps = config.vocab_size, config.d_model, config.eps
    if F % config.heads:
        fail(name, f"d_model (={F}) must be divisible by heads (={config.heads})")
    blocks = [EncoderBlock(config.heads, config.hidden, pre_ln=False, activation=config.activation, eps=eps,
                           dropout=rate, attention_dropout=config.attention_dropout) for _ in range(config.layers)]
    parts = {"types": Embedding(config.type_vocab_size, F, w_init=initializers.normal(0.02)),
             "pos": LearnedPositions(config.context), "norm": LayerNorm(eps=eps), "drop": Dropout(rate),
             "encoder": serial(*blocks),  # (x, mask) -> (h, mask)
             "mlm": serial(dense=Dense(F), act=Gelu(approximate=False), norm=LayerNorm(eps=eps))}
    if config.pooler:
        parts["pooler"] = serial(take=TokenAt(0), dense=Dense(F), act=Tanh())

    def init(key, in_shape):
        ids_shape, types_shape, mask_shape = _parts(in_shape)
        for what, shape in (("ids", ids_shape), ("token_type_ids", types_shape), ("attention_mask", mask_shape)):
            if shape is not None and (len(shape) != 2 or (what != "ids" and tuple(shape) != tuple(ids_shape))):
                fail(name, f"expected {what} of shape (N, T) like ids {tuple(ids_shape)}, got {tuple(shape)}")
        n, T = ids_shape
        k_embed, *keys = jax.random.split(key, len(parts) + 1)
        shapes = {"types": (n, T), "encoder": ((n, T, F), (n, 1, T, T))}
        params, state = {"embed": {"w": initializers.normal(0.02)(k_embed, (V, F), jnp.float32)}}, {}
        for k, (part, layer) in zip(keys, parts.items()):
            _, params[part], state[part] = layer.init(k, shapes.get(part, (n, T, F)))
        params["head"] = {"b": jnp.zeros((V,), jnp.float32)}
        logits = (n, T, V)
        return (logits, (n, F)) if config.pooler else logits, params, state

    def inputs(x):
        ids, type_ids, valid = _parts(x)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            fail(name, f"expected integer ids of shape (N, T), got {ids.dtype} {tuple(ids.shape)}")
        N, T = ids.shape
        type_ids = jnp.zeros_like(ids) if type_ids is None else type_ids
        valid = jnp.ones((N, T), bool) if valid is None else jnp.asarray(valid, bool)  # (N, T)
        if type_ids.shape != ids.shape or valid.shape != ids.shape:
            fail(name, f"token_type_ids and attention_mask must have the shape of ids {tuple(ids.shape)}, got "
                       f"{tuple(type_ids.shape)} and {tuple(valid.shape)}")
        return ids, type_ids, jnp.broadcast_to(valid[:, None, None, :], (N, 1, T, T))  # keys must be tokens

    def forward(tape, x):
        """Children on the tape -> (output, what backward needs: ids, z (N, T, F) the decoder's input, x)."""
        ids, type_ids, mask = inputs(x)
        e = lookup(tape.params["embed"]["w"], ids) + tape("types", parts["types"], type_ids)  # (N, T, F)
        for part in ("pos", "norm", "drop"):
            e = tape(part, parts[part], e)
        h, _ = tape("encoder", parts["encoder"], (e, mask))  # (N, T, F)
        z = tape("mlm", parts["mlm"], h)
        logits = bias_add(linear_dx(z, tape.params["embed"]["w"]), tape.params["head"]["b"])  # z @ w.T + b
        return ((logits, tape("pooler", parts["pooler"], h)) if config.pooler else logits), (ids, z, x)

    # dz = dlogits @ w; dh = the MLM transform's and the pooler's pullbacks, added; dw = dlogits.T @ z
    # (the decoder) + the lookup's scatter of the embeddings' cotangent to the rows of ids; db =
    # sum(dlogits). Residuals: ids, z and the children's own.
    def backward(replay, saved, dout):
        (ids, z, x), w = saved, replay.params["embed"]["w"]
        dlogits = dout[0] if config.pooler else dout  # (N, T, V)
        dh = replay("mlm", linear(dlogits, w))  # (N, T, F)
        if config.pooler:
            dh = dh + replay("pooler", dout[1])
        de, _ = replay("encoder", (dh, None))
        for part in ("drop", "norm", "pos"):
            de = replay(part, de)
        replay("types", de)  # integer ids: no dx
        own = {"embed": {"w": lookup_dw(ids, de, V) + linear_dw(dlogits, z)},  # (V, F): both uses of w
               "head": {"b": bias_grad(dlogits)}}  # (V,)
        return (type(x)((None, None, None)[:len(x)]) if isinstance(x, (tuple, list)) else None), own

    return taped(name, init, forward, backward)

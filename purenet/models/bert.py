"""MiniBERT: a bidirectional Transformer encoder trained by masked language modelling (Devlin et al. 2018),
and BERT's masking procedure.

Dimension letters: N batch, T positions, V vocabulary size (the [MASK] and [PAD] ids included), F
features (d_model). The model maps ids (N, T) to logits (N, T, V): token embedding w[ids] + learned
positions, pre-LN encoder blocks without a causal mask whose keys are restricted to the tokens that are
not `pad_id`, a final LayerNorm, then BERT's MLM head (Dense F + GELU + LayerNorm) and an output layer
tied to the token embedding: logits = z @ w.T + b. The table w is used twice; its gradient is the sum of
both uses, written out in the pullback (the pattern of `tied.py`, whose body cannot see the ids and so
cannot build a padding mask). Params {"embed": {"w": (V, F)}, "pos": {"pos", "drop"}, "encoder":
{"blocks": (...), "out", "norm"}, "mlm": {"dense", "act", "norm"}, "head": {"b": (V,)}}; state: the
sub-layers' (trees without leaves: every part is stateless).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_positive, check_range, fail, is_int
from purenet.combinators import select, serial, taped
from purenet.core import Layer
from purenet.layers import Dense, Dropout, EncoderBlock, Gelu, LayerNorm, LearnedPositions
from purenet.losses import TokenTargets
from purenet.ops import bias_add, bias_grad, linear, linear_dw, lookup, lookup_dw, matmul_t


class BertConfig(NamedTuple):
    """The hyperparameters of `bert`: vocabulary (with [MASK] and [PAD]), context, depth, widths, padding id."""

    vocab_size: int  # every id the model reads or predicts, [MASK] and [PAD] included
    context: int = 128  # the most positions a sequence may have (the learned position table)
    layers: int = 4
    d_model: int = 128
    heads: int = 4
    hidden: int | None = None  # feed-forward width; None: 4 * d_model
    dropout: float = 0.0  # on embeddings + positions and on every sub-layer's output
    pad_id: int | None = None  # ids equal to it are padding: no query attends to them; None: no padding
    activation: str = "gelu"


def bert(config: BertConfig) -> Layer:
    """The masked language model `config` describes (module docstring): ids (N, T) -> logits (N, T, V).

    A position whose id is `pad_id` is never attended to; its own output is computed but meaningless
    (give it no loss: `mask_tokens` never chooses it)."""
    name = "MiniBERT"
    for field in ("vocab_size", "context", "layers", "d_model", "heads"):
        check_positive(name, field, getattr(config, field))
    rate = check_range(name, "dropout", config.dropout, lambda r: 0 <= r < 1, "in [0, 1)")
    V, F, pad = config.vocab_size, config.d_model, config.pad_id
    if F % config.heads:
        fail(name, f"d_model (={F}) must be divisible by heads (={config.heads})")
    if pad is not None and not (is_int(pad) and 0 <= pad < V):
        fail(name, f"pad_id must be None or an id in [0, vocab_size={V}), got pad_id={pad!r}")
    hidden = config.hidden or 4 * F
    blocks = [EncoderBlock(config.heads, hidden, dropout=rate, activation=config.activation)
              for _ in range(config.layers)]
    parts = {"pos": serial(pos=LearnedPositions(config.context), drop=Dropout(rate)),  # (N, T, F)
             "encoder": serial(blocks=serial(*blocks), out=select(0), norm=LayerNorm()),  # (x, mask) -> (N, T, F)
             "mlm": serial(dense=Dense(F), act=Gelu(), norm=LayerNorm())}  # (N, T, F)

    def init(key, in_shape):
        if len(in_shape) != 2:
            fail(name, f"expected ids of rank 2 (N, T), got shape {tuple(in_shape)}")
        n, T = in_shape
        k_embed, *keys = jax.random.split(key, 4)
        shapes = {"pos": (n, T, F), "encoder": ((n, T, F), (n, 1, T, T)), "mlm": (n, T, F)}
        params, state = {"embed": {"w": initializers.normal(0.02)(k_embed, (V, F), jnp.float32)}}, {}
        for k, (part, layer) in zip(keys, parts.items()):
            _, params[part], state[part] = layer.init(k, shapes[part])
        params["head"] = {"b": jnp.zeros((V,), jnp.float32)}
        return (n, T, V), params, state

    def check(ids):
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            fail(name, f"expected integer ids of shape (N, T), got {ids.dtype} {tuple(ids.shape)}")

    def forward(tape, ids):
        """-> (logits (N, T, V), (ids, z (N, T, F): the head's input))."""
        check(ids)
        N, T = ids.shape
        valid = jnp.ones((N, T), bool) if pad is None else ids != pad  # (N, T)
        mask = jnp.broadcast_to(valid[:, None, None, :], (N, 1, T, T))  # keys must be tokens
        w = tape.params["embed"]["w"]
        x = tape("pos", parts["pos"], lookup(w, ids))
        z = tape("mlm", parts["mlm"], tape("encoder", parts["encoder"], (x, mask)))
        return bias_add(matmul_t(z, w), tape.params["head"]["b"]), (ids, z)  # z @ w.T + b: (N, T, V)

    # dz = dlogits @ w; dw = dlogits.T @ z (the head) + the lookup's scatter of the embedding's cotangent
    # to the rows of ids; db = sum(dlogits). Residuals: ids, z and the sub-layers' own.
    def backward(back, saved, dlogits):
        (ids, z), w = saved, back.params["embed"]["w"]
        dh = back("mlm", linear(dlogits, w))  # (N, T, F)
        dx, _ = back("encoder", dh)
        de = back("pos", dx)
        return None, {"embed": {"w": lookup_dw(ids, de, V) + linear_dw(dlogits, z)},  # (V, F): both uses of w
                      "head": {"b": bias_grad(dlogits)}}  # (V,)

    return taped(name, init, forward, backward)


# One in `rate` positions is chosen; of those, `mask_fraction` become [MASK], `random_fraction` a
# uniformly drawn token (which may be the original), and the rest keep their id.
def mask_tokens(key: jax.Array, ids: jax.Array, *, mask_id: int, num_tokens: int, rate: float = 0.15,
                mask_fraction: float = 0.8, random_fraction: float = 0.1,
                valid: jax.Array | None = None) -> tuple[jax.Array, TokenTargets]:
    """BERT's masking of a batch for masked language modelling (pure, jittable; the same key gives
    the same draw): each position where `valid` (default: everywhere) is chosen independently with
    probability `rate`; a chosen position's input becomes `mask_id` with probability `mask_fraction`, a
    random id in [0, num_tokens) with `random_fraction`, and otherwise stays.

    Shapes: ids (N, T) int -> (inputs (N, T) int, TokenTargets(labels=ids, mask=chosen (N, T) bool)),
    ready for `masked_softmax_cross_entropy` (the loss counts only chosen positions)."""
    name = "mask_tokens"
    rate = check_range(name, "rate", rate, lambda r: 0 < r <= 1, "in (0, 1]")
    for what, value in (("mask_fraction", mask_fraction), ("random_fraction", random_fraction)):
        check_range(name, what, value, lambda r: 0 <= r <= 1, "in [0, 1]")
    if mask_fraction + random_fraction > 1:
        fail(name, f"mask_fraction + random_fraction must be <= 1, got {mask_fraction} + {random_fraction}")
    check_positive(name, "num_tokens", num_tokens)
    if not is_int(mask_id):
        fail(name, f"mask_id must be an int, got mask_id={mask_id!r}")
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        fail(name, f"expected integer ids, got dtype {ids.dtype}")
    if valid is not None and jnp.shape(valid) != ids.shape:
        fail(name, f"valid must have the shape of ids {tuple(ids.shape)}, got {tuple(jnp.shape(valid))}")
    k_choose, k_action, k_random = jax.random.split(key, 3)
    chosen = jax.random.bernoulli(k_choose, rate, ids.shape)  # (N, T)
    if valid is not None:
        chosen = chosen & jnp.asarray(valid, bool)
    action = jax.random.uniform(k_action, ids.shape)  # (N, T): which of the three a chosen position gets
    random_ids = jax.random.randint(k_random, ids.shape, 0, num_tokens, ids.dtype)
    inputs = jnp.where(chosen & (action < mask_fraction), jnp.asarray(mask_id, ids.dtype),
                       jnp.where(chosen & (action < mask_fraction + random_fraction), random_ids, ids))
    return inputs, TokenTargets(ids, chosen)

"""Benchmark: purenet's handwritten-VJP training step against the best peers, side by side in one process.

What is compared, per row (model and batch): one full training step (forward, backward, Adam lr 1e-3,
softmax cross-entropy, the same shapes and batch) written six ways, each peer built from purenet's initial
parameters by a converter, so that all compute the same function (tests/experiments/test_benchmark.py
checks every peer's loss and gradients against ours; the char-GRU row is purenet's GRU with PyTorch's two
biases, `recurrent_bias=True`, which torch.nn.GRU and Flax's and Equinox's GRUCell all match):

- purenet: `model.vjp` + `loss.vjp` (the handwritten pullbacks), `purenet.optim.adam`;
- jax.grad of our forward: `jax.value_and_grad` through the same `apply` (inherits our forward's choices);
- plain jax.grad: the model written directly with jnp/lax, params a dict, `jax.value_and_grad`, Adam in jnp;
  the recurrent rows are a `lax.scan` whose step computes `x_t @ W_x + h @ W_h + b`;
- Flax linen (nn.Dense, nn.Conv, nn.RNN over OptimizedLSTMCell / GRUCell / SimpleCell, optax.adam) and
  Equinox (eqx.nn layers on one example, vmapped over the batch; cells in a `lax.scan`; optax.adam);
- PyTorch on the CPU (torch.nn layers, NCHW images, nn.LSTM / GRU / RNN, torch.optim.Adam).

How it is timed: every JAX step is compiled ahead, then after a warm-up they run in round-robin rounds with
`block_until_ready`. PyTorch's OpenMP threads spin after each call, so its step runs in its own block of
rounds, alternating with the JAX block three times; each time is the median over all its rounds. The table
gives each peer's ms and its ratio peer / purenet (below 1.00: the peer is faster), the fastest peer (jax.grad
of our forward counts as one) and purenet / fastest, XLA's temporary bytes (`memory_analysis()`) of ours
and of jax.grad of our forward (the JSON has every JAX peer's), `cost_analysis()` FLOPs, achieved GFLOP/s
and the fraction of this machine's float32 matmul peak, measured here too. The bf16 column is purenet's own step
under the mixed-precision policy `Policy(compute_dtype=bfloat16)` (float32 params, Adam state and logits; forward
and pullbacks in bfloat16, sums in float32), timed in the same rounds: its ms, its time over the float32 step's,
and its XLA temporary bytes. Every JAX step of a row (ours, bf16, jax.grad of our forward, plain jax.grad,
Flax, Equinox) is compiled with the XLA options `purenet.compiler` picks for purenet's step of that row (what
`make_train_step` does by default; the "XLA options" column names them), and where there are any, our step
without them is timed in the same rounds (the last column: its ms and its time over ours);
`--no-compiler-options` compiles everything without. Flax, Equinox and PyTorch come
with `pip install -e ".[bench]"`; a peer whose library is missing, or that has no natural form for a row
(Equinox GPT), prints "-". The row "GPT-2 124M B4 T256" is GPT-2 small's architecture at a real size
(`GPT2LMHeadModel`'s, as `purenet.interop.load_gpt2` builds it: 12 layers, 768 wide, 50,257 ids, a tied
head without bias), batch 4 of 256 tokens, against jax.grad of our forward and PyTorch running
`transformers`' own GPT2LMHeadModel (in the `bench` extra) with purenet's weights; its step takes seconds,
so it times at most 6 rounds, and it runs only when named (about 6 minutes and 10 GB of memory in all).

    python experiments/benchmark.py                 # full run, writes runs/benchmark/{results.json,table.md}
    python experiments/benchmark.py --quick         # tiny configuration (harness check only)
    python experiments/benchmark.py --models "char-LSTM 65-64-256" "char-GRU 65-64-256"   # some rows
    python experiments/benchmark.py --models "GPT-2 124M B4 T256"                         # the 124M row only
    python experiments/benchmark.py --sweep-options     # purenet's steps under XLA option sets (purenet.compiler)
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import pathlib
import platform
import statistics
import time
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import common
from purenet import compiler, losses, optim
from purenet.combinators import serial
from purenet.interop import gpt2 as gpt2_interop
from purenet.layers import GRU, Dense, Embedding
from purenet.models import (CharLMConfig, GPTConfig, LeNetConfig, ResNetConfig, ViTConfig, char_lm, gpt, lenet5, mlp,
                            resnet, vit)
from purenet.models.lenet import CLASSIC
from purenet.precision import Policy, with_policy
from purenet.training import make_train_step

LEARNING_RATE = 1e-3
NO_OPTIONS = "purenet without XLA options"  # timed beside the others when a row's step has options

# ------------------------------------------------------------------------------------------------- rows


ALL_PEERS = ("plain jax.grad", "Flax", "Equinox", "PyTorch CPU")  # PEERS' names, below


class Row(NamedTuple):
    """One benchmark row: which model family, its configuration, the batch, and which peers run it."""

    kind: str  # "mlp", "lenet", "char", "gpt", "gpt2", "vit" or "resnet": how purenet and the peers build it
    config: Any  # MLP: the layer widths (784, 512, 512, 10); LeNetConfig; CharLMConfig; GPTConfig; ViTConfig; ...
    batch: int
    steps: int = 0  # token models: the sequence length T (ids (N, T) over config.vocab_size)
    peers: tuple = ALL_PEERS  # (): a purenet-only row (jax.grad of our forward still runs)
    rounds: int = 0  # at most this many timed rounds (a step of seconds); 0: the run's --rounds
    opt_in: bool = False  # True: runs only when --models names it (a row of minutes and gigabytes)
    channels: int = 1  # images: (N, H, W, channels)


def rows(batch_size: int = 128, quick: bool = False) -> dict[str, Row]:
    """The rows by name. MLP and LeNet take `batch_size`; the char models B 32, T 64; GPT B 16, T 128;
    GPT-2 124M (`GPT2LMHeadModel`'s architecture as `purenet.interop.load_gpt2` builds it) B 4, T 256, at
    most 6 rounds (its step takes seconds), against PyTorch running `transformers`' reference model, only
    when --models names it (about 6 minutes and 10 GB of memory here). Three purenet-only rows of the model
    zoo, also only when named (--sweep-options takes them by default): a ViT on 28 x 28 x 1 at `batch_size`
    and on 32 x 32 x 3 at B 64, a ResNet-14 on 32 x 32 x 3 at B 32.
    `quick`: batch 4 everywhere, ViTs of 1 layer, character sequences of 8, GPT 2 layers of context 16,
    GPT-2 2 layers 16 wide over 76 ids (a harness check only)."""
    chars = partial(CharLMConfig, 65, hidden=256, layers=1, embedding=64)
    char_batch, char_steps, context = (4, 8, 16) if quick else (32, 64, 128)
    gpt_config = GPTConfig(65, context=context, layers=2 if quick else 4, d_model=128, heads=4, hidden=512,
                           residuals="logsumexp")
    gpt2_config = (GPTConfig(76, context=32, layers=2, d_model=16, heads=2, head_bias=False) if quick else
                   GPTConfig(50257, context=1024, layers=12, d_model=768, heads=12, head_bias=False))
    batch_size = 4 if quick else batch_size
    return {
        "MLP 784-512-512-10": Row("mlp", (784, 512, 512, 10), batch_size),
        "LeNet-5": Row("lenet", LeNetConfig(), batch_size),
        "LeNet-5 classic": Row("lenet", CLASSIC, batch_size),
        "LeNet-5, conv1 on lax.conv": Row("lenet", LeNetConfig(algorithm="xla"), batch_size, peers=()),
        "char-LSTM 65-64-256": Row("char", chars(cell="lstm"), char_batch, char_steps),
        "char-GRU 65-64-256": Row("char", chars(cell="gru"), char_batch, char_steps),
        "char-SimpleRNN 65-64-256": Row("char", chars(cell="rnn"), char_batch, char_steps),
        "GPT 4L d128 h4 T128": Row("gpt", gpt_config, 4 if quick else 16, context),
        "GPT-2 124M B4 T256": Row("gpt2", gpt2_config, 4, 16 if quick else 256, peers=("PyTorch CPU",), rounds=6,
                                  opt_in=True),
        # purenet-only rows of the model zoo, for --sweep-options (timed only when named)
        "ViT B128": Row("vit", ViTConfig(layers=1 if quick else 4), batch_size, peers=(), opt_in=True),
        "ViT 32x32x3 B64": Row("vit", ViTConfig(image_size=32, layers=1 if quick else 4), 4 if quick else 64,
                               peers=(), opt_in=True, channels=3),  # three channels: patches on a convolution
        "ResNet-14 B32": Row("resnet", ResNetConfig(), 4 if quick else 32, peers=(), opt_in=True, channels=3),
    }


def purenet_model(row: Row):
    """-> (purenet model, its input shape). LeNet: x (N, 28, 28, 1); MLP: x (N, 784); char and GPT: ids
    (N, T). The char-GRU is `char_lm`'s layout with GRU(recurrent_bias=True), PyTorch's two biases, so
    that torch.nn.GRU, Flax's GRUCell and Equinox's GRUCell compute the same function."""
    if row.kind == "mlp":
        return mlp(row.config[1:-1], row.config[-1]), (row.batch, row.config[0])
    if row.kind == "lenet":
        return lenet5(row.config), (row.batch, 28, 28, 1)
    if row.kind in ("gpt", "gpt2"):
        return gpt(row.config), (row.batch, row.steps)
    if row.kind in ("vit", "resnet"):
        size = row.config.image_size if row.kind == "vit" else 32
        return (vit if row.kind == "vit" else resnet)(row.config), (row.batch, size, size, row.channels)
    c = row.config
    if c.cell != "gru":
        return char_lm(c), (row.batch, row.steps)
    model = serial(embed=Embedding(c.vocab_size, c.embedding), rnn=serial(GRU(c.hidden, recurrent_bias=True)),
                   head=Dense(c.vocab_size))
    return model, (row.batch, row.steps)


def make_batch(row: Row, in_shape, key):
    """-> (x, labels): images x float32 with labels (N,) in [0, 10), or ids (N, T) with one label per token."""
    key_x, key_y = jax.random.split(key)
    if row.kind in ("char", "gpt", "gpt2"):
        vocab = row.config.vocab_size
        return jax.random.randint(key_x, in_shape, 0, vocab), jax.random.randint(key_y, in_shape, 0, vocab)
    classes = row.config[-1] if row.kind == "mlp" else row.config.num_classes
    return jax.random.normal(key_x, in_shape, jnp.float32), jax.random.randint(key_y, in_shape[:1], 0, classes)


# ---------------------------------------------------------------------------------- purenet's steps


def handwritten_loss_and_grads(model, loss, state, params, x, y):
    """purenet's loss and gradients through the handwritten pullbacks: -> (loss (), grads like params)."""
    logits, _, pullback = model.vjp(params, state, x, train=True)
    value, loss_pullback = loss.vjp(logits, y)
    grads, _ = pullback(loss_pullback(jnp.ones_like(value)))
    return value, grads


def build_steps(model, loss, optimizer, state):
    """-> (handwritten step, jax.value_and_grad step), both `(params, opt_state, x, y) -> (params,
    opt_state, loss)` and identical but for how the gradient is computed."""

    def update(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state

    def handwritten(params, opt_state, x, y):
        value, grads = handwritten_loss_and_grads(model, loss, state, params, x, y)
        return (*update(params, opt_state, grads), value)

    def autodiff(params, opt_state, x, y):
        def objective(p):
            return loss.apply(model.apply(p, state, x, train=True)[0], y)

        value, grads = jax.value_and_grad(objective)(params)
        return (*update(params, opt_state, grads), value)

    return handwritten, autodiff


def compile_step(step, *args, options=None):
    """-> (compiled step, XLA temporary bytes, FLOPs); `options`: XLA compiler options for this step."""
    compiled = jax.jit(step, compiler_options=options or None).lower(*args).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, int(memory.temp_size_in_bytes), float(cost.get("flops", float("nan")))


# -------------------------------------------------------------------------------------------- peers


class Peer(NamedTuple):
    """One peer's form of a row, built from purenet's params so that both compute the same function.

    convert: purenet params -> the peer's params, in jnp only, so a test maps the peer's gradients back to
        purenet's tree through its VJP (`peer_loss_and_grads`); PyTorch's are a state_dict of jnp arrays.
    loss: (peer params, x, y) -> mean cross-entropy, the peer's forward (PyTorch: (module, x, y) -> tensor).
    inputs: x -> the peer's layout (Equinox and PyTorch: NCHW images, torch tensors), made once, untimed.
    optimizer: JAX peers: Adam(1e-3) as optax's (init, update) pair. PyTorch: None (torch.optim.Adam).
    module: PyTorch only: () -> the nn.Module whose state_dict `convert` fills.
    """

    convert: Callable
    loss: Callable
    inputs: Callable = lambda x: x
    optimizer: Any = None
    module: Callable | None = None


def jnp_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """Adam written in jnp as a plain-JAX user writes it: -> (init, update), shaped as optax's."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return jnp.zeros((), jnp.float32), zeros, zeros  # (step count, first moments, second moments)

    def update(grads, state, params=None):
        del params
        count, mu, nu = state
        count = count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
        c1, c2 = 1 - b1**count, 1 - b2**count  # bias corrections
        updates = jax.tree.map(lambda m, v: -learning_rate * (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
        return updates, (count, mu, nu)

    return init, update


def _mean_xent(logits, y):  # logits (N..., K), y (N...) int -> () mean over N...
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1))


def _layer_norm(x, p, eps=1e-5):  # over the last axis; p {"gamma", "beta"}
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["gamma"] + p["beta"]


def _split_gates(w, gates):  # (..., G*H) -> G x (..., H)
    return jnp.split(w, gates, axis=-1)


# plain jax.grad: the forwards, written directly with jnp/lax over the params dict (purenet's names and
# layouts, empty entries and all: a user's dict of arrays), so `convert` is the identity.


def _plain_mlp(config, p, x):  # x (N, 784) -> logits (N, 10)
    for i in range(len(config) - 2):
        x = jax.nn.relu(x @ p[f"dense{i}"]["w"] + p[f"dense{i}"]["b"])
    return x @ p["head"]["w"] + p["head"]["b"]


def _plain_lenet(config, p, x):  # x (N, 28, 28, 1) -> logits (N, 10)
    for name, padding in zip(("conv1", "conv2"), config.paddings):
        x = lax.conv_general_dilated(x, p[name]["w"], (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jnp.tanh(x + p[name]["b"])
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = x.reshape(x.shape[0], -1)  # (N, H*W*C)
    x = jnp.tanh(x @ p["fc1"]["w"] + p["fc1"]["b"])
    x = jnp.tanh(x @ p["fc2"]["w"] + p["fc2"]["b"])
    return x @ p["head"]["w"] + p["head"]["b"]


def _plain_lstm_step(p, carry, x_t):  # carry (h, c) each (N, H), x_t (N, F)
    h, c = carry
    i, f, g, o = _split_gates(x_t @ p["w_x"] + h @ p["w_h"] + p["b"], 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def _plain_gru_step(p, h, x_t):  # reset after the recurrent matmul, the recurrent bias inside it
    a_r, a_z, a_n = _split_gates(x_t @ p["w_x"] + p["b"], 3)
    u_r, u_z, u_n = _split_gates(h @ p["w_h"] + p["b_h"], 3)
    r, z = jax.nn.sigmoid(a_r + u_r), jax.nn.sigmoid(a_z + u_z)
    n = jnp.tanh(a_n + r * u_n)
    h = (1 - z) * n + z * h
    return h, h


def _plain_rnn_step(p, h, x_t):
    h = jnp.tanh(x_t @ p["w_x"] + h @ p["w_h"] + p["b"])
    return h, h


PLAIN_STEPS = {"lstm": _plain_lstm_step, "gru": _plain_gru_step, "rnn": _plain_rnn_step}


def _plain_char(config, p, ids):  # ids (N, T) -> logits (N, T, V)
    xs = jnp.swapaxes(p["embed"]["w"][ids], 0, 1)  # (T, N, E), time-major for the scan
    h0 = jnp.zeros((ids.shape[0], config.hidden), xs.dtype)
    carry = (h0, h0) if config.cell == "lstm" else h0
    _, hs = lax.scan(partial(PLAIN_STEPS[config.cell], p["rnn"][0]), carry, xs)  # hs (T, N, H)
    return jnp.swapaxes(hs, 0, 1) @ p["head"]["w"] + p["head"]["b"]


def _plain_attention(heads, p, x):  # causal self-attention, fused qkv: x (N, T, C) -> (N, T, C)
    n, t, c = x.shape
    q, k, v = (z.reshape(n, t, heads, c // heads) for z in jnp.split(x @ p["w_qkv"] + p["b_qkv"], 3, axis=-1))
    s = jnp.einsum("nqhd,nkhd->nhqk", q, k) * (c // heads) ** -0.5  # (N, heads, T, T)
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
    y = jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(s, axis=-1), v).reshape(n, t, c)
    return y @ p["w_o"] + p["b_o"]


def _plain_gpt(config, p, ids):  # pre-LN blocks, tanh-GELU feed-forward, tied head: ids (N, T) -> (N, T, V)
    body, w = p["body"], p["embed"]["w"]
    x = w[ids] + body["pos"]["w"][: ids.shape[1]]  # (N, T, C)
    for block in body["blocks"]:
        x = x + _plain_attention(config.heads, block["attn"], _layer_norm(x, block["norm1"]))
        ff = block["ff"]
        x = x + jax.nn.gelu(_layer_norm(x, block["norm2"]) @ ff["w_in"] + ff["b_in"]) @ ff["w_out"] + ff["b_out"]
    return _layer_norm(x, body["norm"]) @ w.T + p["head"]["b"]


PLAIN_FORWARDS = {"mlp": _plain_mlp, "lenet": _plain_lenet, "char": _plain_char, "gpt": _plain_gpt}


def plain_peer(row: Row) -> Peer:
    forward = partial(PLAIN_FORWARDS[row.kind], row.config)
    return Peer(lambda params: params, lambda p, x, y: _mean_xent(forward(p, x), y),
                optimizer=jnp_adam(LEARNING_RATE))


# Conversions shared by PyTorch and Equinox, which keep Linear weights (out, in) and convolution kernels
# OIHW over NCHW inputs.


def _out_in_layers(row: Row, params) -> list:
    """purenet's Dense and Conv2D weights as [(weight (out, in) or OIHW, bias)] in layer order; LeNet's
    fc1 columns reordered from purenet's (H, W, C) flattening to the (C, H, W) one of NCHW maps."""
    if row.kind == "mlp":
        names = [f"dense{i}" for i in range(len(row.config) - 2)] + ["head"]
        return [(params[k]["w"].T, params[k]["b"]) for k in names]
    convs = [(params[k]["w"].transpose(3, 2, 0, 1), params[k]["b"]) for k in ("conv1", "conv2")]  # HWIO -> OIHW
    w, channels = params["fc1"]["w"], row.config.channels[1]  # w (H*W*C, D)
    side = math.isqrt(w.shape[0] // channels)
    fc1 = w.reshape(side, side, channels, -1).transpose(3, 2, 0, 1).reshape(w.shape[1], -1)  # (D, C*H*W)
    return convs + [(fc1, params["fc1"]["b"])] + [(params[k]["w"].T, params[k]["b"]) for k in ("fc2", "head")]


def _lenet_features(config) -> int:  # the features flattened after both stages, from 28 x 28 inputs
    side = 28
    for k, padding in zip(config.kernels, config.paddings):
        side = (side if padding == "SAME" else side - k + 1) // 2
    return config.channels[1] * side * side


def _channels_first(x):  # NHWC -> NCHW
    return jnp.transpose(x, (0, 3, 1, 2))


def _torch_rnn_state(config, p) -> dict:
    """A char model's recurrent layer as torch.nn.LSTM / GRU / RNN's state_dict: weights transposed, gates
    in the same order; LSTM and RNN take purenet's one bias as bias_ih and zeros as bias_hh."""
    r = p["rnn"][0]
    bias_hh = r["b_h"] if config.cell == "gru" else jnp.zeros_like(r["b"])
    return {"rnn.weight_ih_l0": r["w_x"].T, "rnn.weight_hh_l0": r["w_h"].T, "rnn.bias_ih_l0": r["b"],
            "rnn.bias_hh_l0": bias_hh}


def _torch_gpt_state(p) -> dict:
    """The GPT as `_torch_modules`' minGPT-style model's state_dict (Linear weights transposed)."""
    body = p["body"]
    state = {"wte.weight": p["embed"]["w"], "wpe.weight": body["pos"]["w"], "bias": p["head"]["b"],
             "ln_f.weight": body["norm"]["gamma"], "ln_f.bias": body["norm"]["beta"]}
    for i, block in enumerate(body["blocks"]):
        linears = {"qkv": (block["attn"], "qkv"), "proj": (block["attn"], "o"), "fc": (block["ff"], "in"),
                   "out": (block["ff"], "out")}
        for name, (q, suffix) in linears.items():
            state[f"blocks.{i}.{name}.weight"], state[f"blocks.{i}.{name}.bias"] = q[f"w_{suffix}"].T, q[f"b_{suffix}"]
        for name, norm in (("ln1", "norm1"), ("ln2", "norm2")):
            state[f"blocks.{i}.{name}.weight"], state[f"blocks.{i}.{name}.bias"] = (block[norm]["gamma"],
                                                                                    block[norm]["beta"])
    return state


def _torch_gpt2_state(config, params) -> dict:
    """GPT-2's params under `GPT2LMHeadModel`'s parameter names (purenet.interop's table; GPT-2 keeps every
    tensor in purenet's layout, Conv1D weights (in, out)). The tied `lm_head.weight` is `wte.weight`."""
    trees = {"params": params}
    state = {}
    for entry in gpt2_interop.GPT2.entries(config):
        assert entry.kind == "same", entry  # no transpose to make: the conversion is a renaming
        leaf = trees
        for part in entry.path:
            leaf = leaf[part]
        state[entry.name] = leaf
    return state


def _torch_modules(row: Row):
    """-> () -> the row's torch.nn.Module (NCHW LeNet, batch-first recurrent layers, minGPT's GPT,
    `transformers`' GPT2LMHeadModel)."""
    from torch import nn

    c = row.config
    if row.kind == "gpt2":
        import transformers

        def build():  # the reference config `save_gpt2` writes beside the weights; no dropout, no KV cache
            reference = gpt2_interop.GPT2.reference_config(c, {})
            del reference["architectures"], reference["model_type"]
            config = transformers.GPT2Config(**reference, use_cache=False)
            config._attn_implementation = "sdpa"  # the reference's default on the CPU, set explicitly
            return transformers.GPT2LMHeadModel(config)

        return build
    if row.kind == "mlp":
        def build():
            layers = [m for a, b in itertools.pairwise(c[:-1]) for m in (nn.Linear(a, b), nn.ReLU())]
            return nn.Sequential(*layers, nn.Linear(c[-2], c[-1]))

        return build
    if row.kind == "lenet":
        def build():
            convs = [m for i, o, k, pad in zip((1, *c.channels[:1]), c.channels, c.kernels, c.paddings)
                     for m in (nn.Conv2d(i, o, k, padding=pad.lower()), nn.Tanh(), nn.MaxPool2d(2))]
            return nn.Sequential(*convs, nn.Flatten(), nn.Linear(_lenet_features(c), c.dense[0]), nn.Tanh(),
                                 nn.Linear(*c.dense), nn.Tanh(), nn.Linear(c.dense[1], c.num_classes))

        return build
    if row.kind == "char":
        cells = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # nn.RNN's nonlinearity defaults to tanh

        class CharRNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.out = nn.Embedding(c.vocab_size, c.embedding), nn.Linear(c.hidden, c.vocab_size)
                self.rnn = cells[c.cell](c.embedding, c.hidden, batch_first=True)

            def forward(self, ids):
                return self.out(self.rnn(self.embed(ids))[0])

        return CharRNN
    return partial(_torch_gpt, row.config, nn)


def _torch_gpt(config, nn):
    """The GPT in PyTorch as minGPT writes it: fused qkv, F.scaled_dot_product_attention, tied head."""
    import torch

    F, c, h = nn.functional, config.d_model, config.heads

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.fc, self.out = nn.Linear(c, config.hidden), nn.Linear(config.hidden, c)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = (z.view(n, t, h, c // h).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(c, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, c)
            x = x + self.proj(y)
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(config.vocab_size, c), nn.Embedding(config.context, c)
            self.blocks = nn.ModuleList(Block() for _ in range(config.layers))
            self.ln_f, self.bias = nn.LayerNorm(c), nn.Parameter(torch.zeros(config.vocab_size))

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.T + self.bias  # the tied head

    return Model()


def torch_peer(row: Row) -> Peer | None:
    try:
        import torch
    except ImportError:
        return None
    if row.kind in ("mlp", "lenet"):
        indices = (0, 2, 4) if row.kind == "mlp" else (0, 3, 7, 9, 11)  # the Sequential's Linear / Conv2d

        def convert(params):
            layers = zip(indices, _out_in_layers(row, params))
            return {f"{i}.{name}": v for i, (w, b) in layers for name, v in (("weight", w), ("bias", b))}
    elif row.kind == "char":
        def convert(params):
            return {"embed.weight": params["embed"]["w"], "out.weight": params["head"]["w"].T,
                    "out.bias": params["head"]["b"], **_torch_rnn_state(row.config, params)}
    elif row.kind == "gpt2":
        if importlib.util.find_spec("transformers") is None:
            return None
        convert = partial(_torch_gpt2_state, row.config)
    else:
        convert = _torch_gpt_state

    def inputs(x):
        x = np.asarray(_channels_first(x) if row.kind == "lenet" else x)
        return torch.from_numpy(x.astype(np.int64) if x.dtype.kind == "i" else x.copy())

    def loss(module, x, y):
        logits = module(x).logits if row.kind == "gpt2" else module(x)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return Peer(convert, loss, inputs, module=_torch_modules(row))


def _optax_xent(optax, logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _flax_modules(nn, row: Row):
    """-> the row's flax.linen Module (auto-named: Dense_0, Conv_0, Embed_0, GRUCell_0, Block_0, ...)."""
    c = row.config
    if row.kind == "mlp":
        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                for width in c[1:-1]:
                    x = nn.relu(nn.Dense(width)(x))
                return nn.Dense(c[-1])(x)

        return MLP()
    if row.kind == "lenet":
        class LeNet(nn.Module):
            @nn.compact
            def __call__(self, x):
                for channels, k, padding in zip(c.channels, c.kernels, c.paddings):
                    x = nn.max_pool(jnp.tanh(nn.Conv(channels, (k, k), padding=padding)(x)), (2, 2), strides=(2, 2))
                x = x.reshape(x.shape[0], -1)
                for width in c.dense:
                    x = jnp.tanh(nn.Dense(width)(x))
                return nn.Dense(c.num_classes)(x)

        return LeNet()
    if row.kind == "char":
        cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}

        class CharRNN(nn.Module):
            @nn.compact
            def __call__(self, ids):
                x = nn.RNN(cells[c.cell](c.hidden))(nn.Embed(c.vocab_size, c.embedding)(ids))
                return nn.Dense(c.vocab_size)(x)

        return CharRNN()

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            n, t, d = x.shape
            heads = [z.reshape(n, t, c.heads, d // c.heads)
                     for z in jnp.split(nn.Dense(3 * d)(nn.LayerNorm(epsilon=1e-5)(x)), 3, axis=-1)]
            y = nn.dot_product_attention(*heads, mask=nn.make_causal_mask(jnp.ones((n, t))))
            x = x + nn.Dense(d)(y.reshape(n, t, d))
            h = nn.gelu(nn.Dense(c.hidden)(nn.LayerNorm(epsilon=1e-5)(x)))  # tanh-GELU, flax's default
            return x + nn.Dense(d)(h)

    class GPT(nn.Module):
        @nn.compact
        def __call__(self, ids):
            embed = nn.Embed(c.vocab_size, c.d_model)
            x = embed(ids) + self.param("wpe", nn.initializers.normal(0.02), (c.context, c.d_model))[: ids.shape[1]]
            for _ in range(c.layers):
                x = Block()(x)
            return embed.attend(nn.LayerNorm(epsilon=1e-5)(x)) + self.param("bias", nn.initializers.zeros,
                                                                             (c.vocab_size,))

    return GPT()


def _flax_dense(p):
    return {"kernel": p["w"], "bias": p["b"]}


def _flax_norm(p):
    return {"scale": p["gamma"], "bias": p["beta"]}


def _flax_cell(cell, r) -> dict:
    """purenet's recurrent params as Flax's cell's: one Dense per gate on each side. LSTM ("ii".."ho"):
    the bias on the recurrent side; GRU: the r, z gates' two biases summed on the input side, b_hn on "hn";
    SimpleCell: the bias on the input side ("i")."""
    if cell == "rnn":
        return {"i": {"kernel": r["w_x"], "bias": r["b"]}, "h": {"kernel": r["w_h"]}}
    names = "ifgo" if cell == "lstm" else "rzn"
    wx, wh, b = (_split_gates(r[k], len(names)) for k in ("w_x", "w_h", "b"))
    if cell == "lstm":
        return {**{f"i{g}": {"kernel": w} for g, w in zip(names, wx)},
                **{f"h{g}": {"kernel": w, "bias": v} for g, w, v in zip(names, wh, b)}}
    b_h = _split_gates(r["b_h"], 3)
    return {"ir": {"kernel": wx[0], "bias": b[0] + b_h[0]}, "iz": {"kernel": wx[1], "bias": b[1] + b_h[1]},
            "in": {"kernel": wx[2], "bias": b[2]}, "hr": {"kernel": wh[0]}, "hz": {"kernel": wh[1]},
            "hn": {"kernel": wh[2], "bias": b_h[2]}}


def _flax_params(row: Row, p) -> dict:
    """purenet's params as the `_flax_modules` model's (kernels (in, out) and HWIO, as purenet's)."""
    if row.kind == "mlp":
        names = [f"dense{i}" for i in range(len(row.config) - 2)] + ["head"]
        return {f"Dense_{i}": _flax_dense(p[k]) for i, k in enumerate(names)}
    if row.kind == "lenet":
        return {"Conv_0": _flax_dense(p["conv1"]), "Conv_1": _flax_dense(p["conv2"]),
                **{f"Dense_{i}": _flax_dense(p[k]) for i, k in enumerate(("fc1", "fc2", "head"))}}
    if row.kind == "char":
        cell = {"lstm": "OptimizedLSTMCell_0", "gru": "GRUCell_0", "rnn": "SimpleCell_0"}[row.config.cell]
        return {"Embed_0": {"embedding": p["embed"]["w"]}, cell: _flax_cell(row.config.cell, p["rnn"][0]),
                "Dense_0": _flax_dense(p["head"])}
    body = p["body"]
    params = {"Embed_0": {"embedding": p["embed"]["w"]}, "wpe": body["pos"]["w"], "bias": p["head"]["b"],
              "LayerNorm_0": _flax_norm(body["norm"])}
    for i, b in enumerate(body["blocks"]):
        attn, ff = b["attn"], b["ff"]
        denses = [(attn["w_qkv"], attn["b_qkv"]), (attn["w_o"], attn["b_o"]), (ff["w_in"], ff["b_in"]),
                  (ff["w_out"], ff["b_out"])]
        params[f"Block_{i}"] = {"LayerNorm_0": _flax_norm(b["norm1"]), "LayerNorm_1": _flax_norm(b["norm2"]),
                                **{f"Dense_{j}": {"kernel": w, "bias": v} for j, (w, v) in enumerate(denses)}}
    return params


def flax_peer(row: Row) -> Peer | None:
    try:
        import flax.linen as nn
        import optax
    except ImportError:
        return None
    model = _flax_modules(nn, row)

    def loss(p, x, y):
        return _optax_xent(optax, model.apply({"params": p}, x), y)

    return Peer(partial(_flax_params, row), loss, optimizer=optax.adam(LEARNING_RATE))


def _equinox_model(eqx, row: Row):
    """-> (() -> the row's Equinox model of one example, its forward (model, example) -> logits, and
    load (model, purenet params) -> the model holding them), or None for GPT (no natural form)."""
    c = row.config

    def linears(widths, keys):
        return [eqx.nn.Linear(a, b, key=k) for (a, b), k in zip(itertools.pairwise(widths), keys)]

    if row.kind == "mlp":
        def build():
            return eqx.nn.MLP(c[0], c[-1], c[1], len(c) - 2, activation=jax.nn.relu, key=jax.random.PRNGKey(0))

        indices = range(len(c) - 1)
    elif row.kind == "lenet":
        def build():
            keys = iter(jax.random.split(jax.random.PRNGKey(0), 5))
            tanh, pool = eqx.nn.Lambda(jnp.tanh), eqx.nn.MaxPool2d(2, 2)
            convs = [m for i, o, k, pad in zip((1, *c.channels[:1]), c.channels, c.kernels, c.paddings)
                     for m in (eqx.nn.Conv2d(i, o, k, padding=pad, key=next(keys)), tanh, pool)]
            fc1, fc2, head = linears((_lenet_features(c), *c.dense, c.num_classes), keys)  # on (C, H, W) flattened
            return eqx.nn.Sequential([*convs, eqx.nn.Lambda(jnp.ravel), fc1, tanh, fc2, tanh, head])

        indices = (0, 3, 7, 9, 11)
    elif row.kind == "char":
        def build():
            keys = jax.random.split(jax.random.PRNGKey(0), 4)
            cells = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}
            cell = (cells[c.cell](c.embedding, c.hidden, key=keys[0]) if c.cell in cells else  # Elman: two Linear
                    (eqx.nn.Linear(c.embedding, c.hidden, key=keys[0]),
                     eqx.nn.Linear(c.hidden, c.hidden, use_bias=False, key=keys[1])))
            return (eqx.nn.Embedding(c.vocab_size, c.embedding, key=keys[2]), cell,
                    eqx.nn.Linear(c.hidden, c.vocab_size, key=keys[3]))

        return build, partial(_equinox_char, c), partial(_equinox_char_params, eqx)
    else:
        return None

    def load(model, params):  # the Sequential's / MLP's layers at `indices`, in `_out_in_layers`' order
        layers = [model.layers[i] for i in indices]
        values = [v.reshape(leaf.shape) for (w, b), m in zip(_out_in_layers(row, params), layers)
                  for v, leaf in ((w, m.weight), (b, m.bias))]  # Conv2d's bias is (O, 1, 1)
        return eqx.tree_at(lambda m: [x for i in indices for x in (m.layers[i].weight, m.layers[i].bias)],
                           model, values)

    return build, lambda m, x: m(x), load


def _equinox_char(config, model, ids):  # one sequence: ids (T,) -> logits (T, V)
    embed, cell, head = model
    h0 = jnp.zeros(config.hidden, jnp.float32)

    def step(carry, x_t):
        if config.cell == "rnn":
            carry = jnp.tanh(cell[0](x_t) + cell[1](carry))
        else:
            carry = cell(x_t, carry)
        return carry, carry[0] if config.cell == "lstm" else carry

    _, hs = lax.scan(step, (h0, h0) if config.cell == "lstm" else h0, jax.vmap(embed)(ids))  # hs (T, H)
    return jax.vmap(head)(hs)


def _equinox_char_params(eqx, model, p):
    """purenet's char-model params into the (embedding, cell, head) triple: weights (out, in); the GRU's r, z
    gates' two biases summed into `bias`, b_hn as `bias_n`; the Elman cell's bias on its input Linear."""
    r = p["rnn"][0]
    embed, cell, head = model
    if isinstance(cell, tuple):
        cell = eqx.tree_at(lambda c: (c[0].weight, c[0].bias, c[1].weight), cell, (r["w_x"].T, r["b"], r["w_h"].T))
    else:
        bias = r["b"]
        if hasattr(cell, "bias_n"):
            hidden = r["w_h"].shape[0]
            bias = bias + r["b_h"].at[2 * hidden:].set(0)
            cell = eqx.tree_at(lambda c: c.bias_n, cell, r["b_h"][2 * hidden:])
        cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell, (r["w_x"].T, r["w_h"].T, bias))
    embed = eqx.tree_at(lambda e: e.weight, embed, p["embed"]["w"])
    head = eqx.tree_at(lambda h: (h.weight, h.bias), head, (p["head"]["w"].T, p["head"]["b"]))
    return embed, cell, head


def equinox_peer(row: Row) -> Peer | None:
    try:
        import equinox as eqx
        import optax
    except ImportError:
        return None
    built = _equinox_model(eqx, row)
    if built is None:
        return None
    build, forward, load = built
    # The model's structure only, its arrays' shapes in their places (no random init to run): `convert`
    # fills every array with purenet's params, and `combine` takes those before `static`'s shapes.
    model = eqx.filter_eval_shape(build)
    static = eqx.partition(model, eqx.is_array)[1]

    def convert(params):  # -> the model's arrays (None elsewhere), as eqx.partition splits them
        return eqx.filter(load(model, params), eqx.is_array)

    def loss(arrays, x, y):
        return _optax_xent(optax, jax.vmap(partial(forward, eqx.combine(arrays, static)))(x), y)

    inputs = _channels_first if row.kind == "lenet" else (lambda x: x)
    return Peer(convert, loss, inputs, optax.adam(LEARNING_RATE))


# name -> (Row -> Peer, or None where the library is missing or has no natural form for the row)
PEERS = {"plain jax.grad": plain_peer, "Flax": flax_peer, "Equinox": equinox_peer, "PyTorch CPU": torch_peer}
assert tuple(PEERS) == ALL_PEERS
OURS_AUTODIFF = "jax.grad of our forward"
BF16 = Policy(compute_dtype=jnp.bfloat16)  # the bf16 column: purenet's step under this policy


def _torch_module(peer: Peer, params):
    import torch

    module = peer.module()
    converted = jax.jit(peer.convert)(params)
    loaded = module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in converted.items()}, strict=False)
    # Every parameter filled; a name left out may only be another name of one (GPT-2's lm_head.weight is
    # transformer.wte.weight, tied).
    unfilled = set(loaded.missing_keys) & {name for name, _ in module.named_parameters()}
    assert not loaded.unexpected_keys and not unfilled, (loaded.unexpected_keys, unfilled)
    return module


def peer_loss_and_grads(peer: Peer, params, x, y):
    """The peer's loss and gradients at purenet's `params`, mapped back to purenet's params tree through
    the VJP of `peer.convert` (the transpose of the conversion): -> (loss, grads like params)."""
    converted, back = jax.vjp(jax.jit(peer.convert), params)
    if peer.module is None:
        value, grads = jax.jit(jax.value_and_grad(peer.loss))(converted, peer.inputs(x), y)
    else:
        import torch

        module = _torch_module(peer, params)
        value = peer.loss(module, peer.inputs(x), torch.from_numpy(np.array(y, np.int64)))
        value.backward()
        grads = {k: jnp.asarray(p.grad.numpy()) for k, p in module.named_parameters()}
        value = value.item()
    return float(value), back(grads)[0]


def jax_peer_step(peer: Peer, params, x, y, options=None):
    """-> (() -> the peer's compiled training step on its converted params and batch, its temporary bytes),
    compiled with the XLA `options` purenet's step of the row uses."""
    optimizer_init, optimizer_update = peer.optimizer

    def step(p, opt_state, x, y):
        value, grads = jax.value_and_grad(peer.loss)(p, x, y)
        updates, opt_state = optimizer_update(grads, opt_state, p)
        return jax.tree.map(jnp.add, p, updates), opt_state, value

    converted = jax.jit(peer.convert)(params)
    args = (converted, jax.jit(optimizer_init)(converted), peer.inputs(x), y)
    compiled, temp, _ = compile_step(step, *args, options=options)
    return (lambda: compiled(*args)), temp


def torch_peer_step(peer: Peer, params, x, y):
    """-> () -> loss: one PyTorch training step (forward, backward, torch.optim.Adam) on the converted model."""
    import torch

    module = _torch_module(peer, params)
    x, y = peer.inputs(x), torch.from_numpy(np.array(y, np.int64))
    optimizer = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = peer.loss(module, x, y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


# ------------------------------------------------------------------------------------------- timing


def time_steps(jax_steps, torch_steps, rounds: int, blocks: int = 3, warmup: int = 3) -> list[float]:
    """Median seconds per call of each zero-argument step, JAX's then PyTorch's. In each of `blocks`
    alternations the JAX steps run round-robin for rounds / blocks rounds (block_until_ready), then each
    PyTorch step its own rounds: PyTorch's OpenMP threads spin after a call and would slow whichever step
    ran next, so the two never interleave, and a short pause lets the threads settle at each switch."""
    n = len(jax_steps)
    steps, groups = [*jax_steps, *torch_steps], [range(n), range(n, n + len(torch_steps))]
    for step in steps:
        for _ in range(warmup):
            jax.block_until_ready(step())
    times = [[] for _ in steps]
    for _ in range(blocks):
        for group in filter(None, groups):
            if torch_steps:
                time.sleep(0.2)  # the other side's threads settle
            for _ in range(max(1, rounds // blocks)):
                for i in group:
                    start = time.perf_counter()
                    jax.block_until_ready(steps[i]())
                    times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def matmul_peak_gflops(n=1024, rounds=20):
    """Measured float32 matmul throughput of this machine (GFLOP/s) on an n x n product."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    (seconds,) = time_steps([lambda: matmul(a)], [], rounds, blocks=1)
    return 2 * n**3 / seconds / 1e9


# ------------------------------------------------------------------------------------------ the rows


def row_inputs(row: Row):
    """-> (purenet model, its params and state, the batch x, labels y) of `row`, from fixed keys."""
    model, in_shape = purenet_model(row)
    key_init, key_data = jax.random.split(jax.random.PRNGKey(0))
    # jitted: one compile each instead of one per operation
    _, params, state = jax.jit(model.init, static_argnums=1)(key_init, in_shape)
    x, y = jax.jit(make_batch, static_argnums=(0, 1))(row, in_shape, key_data)
    return model, params, state, x, y


def bench_row(name: str, row: Row, rounds: int, peak: float, use_options: bool = True) -> dict:
    """Compile and time purenet's step and every available peer's on one row -> the row's results.
    Every JAX step of the row is compiled with the XLA options `purenet.compiler` measured for purenet's
    step (`make_train_step`'s "auto"; none with `use_options=False`); with options, purenet's step
    without them is timed too, so the row shows what the options buy."""
    model, params, state, x, y = row_inputs(row)
    optimizer = optim.adam(LEARNING_RATE)
    args = (params, jax.jit(optimizer.init)(params), x, y)
    handwritten, autodiff = build_steps(model, losses.softmax_cross_entropy(), optimizer, state)
    options = compiler.measured_options(jax.make_jaxpr(handwritten)(*args)) if use_options else {}
    ours, ours_temp, flops = compile_step(handwritten, *args, options=options)
    ref, ref_temp, ref_flops = compile_step(autodiff, *args, options=options)
    mixed, _ = build_steps(with_policy(model, BF16), losses.softmax_cross_entropy(), optimizer, state)
    ours_bf16, bf16_temp, _ = compile_step(mixed, *args, options=options)
    jax_steps, temps, torch_steps = {OURS_AUTODIFF: lambda: ref(*args)}, {OURS_AUTODIFF: ref_temp}, {}
    if options:
        plain = compile_step(handwritten, *args)[0]
        jax_steps[NO_OPTIONS] = lambda: plain(*args)
    for peer_name, make in PEERS.items():
        peer = make(row) if peer_name in row.peers else None
        if peer is not None and peer.module is None:
            jax_steps[peer_name], temps[peer_name] = jax_peer_step(peer, params, x, y, options)
        elif peer is not None:
            torch_steps[peer_name] = torch_peer_step(peer, params, x, y)
    seconds = time_steps([lambda: ours(*args), lambda: ours_bf16(*args), *jax_steps.values()],
                         list(torch_steps.values()), rounds)
    ours_s, bf16_s, peer_s = seconds[0], seconds[1], dict(zip([*jax_steps, *torch_steps], seconds[2:]))
    plain_s = peer_s.pop(NO_OPTIONS, None)
    peer_ms = {p: (1e3 * peer_s[p] if p in peer_s else None) for p in (OURS_AUTODIFF, *PEERS)}
    fastest = min(peer_s, key=peer_s.get)
    return {
        "model": name, "batch": row.batch, "purenet_ms": 1e3 * ours_s, "peer_ms": peer_ms,
        "peer_ratio": {p: (None if ms is None else ms / (1e3 * ours_s)) for p, ms in peer_ms.items()},
        "fastest_peer": fastest, "purenet_over_fastest": ours_s / peer_s[fastest],
        "purenet_temp_bytes": ours_temp, "peer_temp_bytes": {p: temps.get(p) for p in peer_ms},
        "purenet_flops": flops, "jax_grad_flops": ref_flops, "purenet_gflops_per_s": flops / ours_s / 1e9,
        "matmul_peak_fraction": flops / ours_s / 1e9 / peak,
        "bf16_ms": 1e3 * bf16_s, "bf16_over_purenet": bf16_s / ours_s, "bf16_temp_bytes": bf16_temp,
        "compiler_options": options, "no_options_ms": None if plain_s is None else 1e3 * plain_s,
    }


# ------------------------------------------------------------------------------- XLA option sets

YNN = "xla_cpu_experimental_ynn_fusion_type"
OPTION_SETS = {  # --sweep-options' candidates; oneDNN is left out: it killed the process on some programs
    "YNNPACK off": {YNN: ""},
    "YNNPACK single products": {YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "Eigen one thread": {"xla_cpu_multi_thread_eigen": False},
}


def sweep_row(row: Row, sets: dict, rounds: int) -> dict:
    """purenet's training step of `row` (`make_train_step`) compiled once per XLA option set and timed in
    round-robin rounds -> {"ratios": {set: its median time over the median time without options, "none
    ms": that time}, "auto": the options `purenet.compiler` picks for the step}."""
    model, params, state, x, y = row_inputs(row)
    optimizer = optim.adam(LEARNING_RATE)
    args = (params, state, optimizer.init(params), {"x": x, "y": y}, jax.random.PRNGKey(0))
    steps = {name: make_train_step(model, losses.softmax_cross_entropy(), optimizer, compiler_options=options)
             for name, options in {"none": None, **sets}.items()}
    auto = compiler.measured_options(steps["none"].trace(*args).jaxpr)
    seconds = time_steps([partial(step, *args) for step in steps.values()], [], rounds, blocks=1, warmup=2)
    ratios = {name: t / seconds[0] for name, t in zip(steps, seconds)}
    return {"ratios": ratios | {"none ms": 1e3 * seconds[0]}, "auto": auto}


def option_set(text: str) -> dict:
    """--extra-options' type: a JSON object of XLA option names and values."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"xla_cpu_multi_thread_eigen\": false}}', "
                                         f"got {text!r}")
    return value


def sweep_table(results: dict, sets: dict) -> str:
    lines = ["| row | ms without options | " + " | ".join(sets) + " | auto picks |",
             "|---|---|" + "---|" * (len(sets) + 1)]
    for name, r in results.items():
        lines.append(f"| {name} | {r['ratios']['none ms']:.1f} | " + " | ".join(f"{r['ratios'][s]:.2f}" for s in sets)
                     + f" | {_options_text(r['auto'])} |")
    return "\n".join(lines)


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"


def markdown(rows: list[dict]) -> str:
    """The table: each peer's ms with its peer / purenet ratio in parentheses, then the fastest peer."""
    peers = (OURS_AUTODIFF, *PEERS)
    head = ("| model | batch | purenet ms | " + " | ".join(f"{p} ms (/ purenet)" for p in peers) +
            " | fastest peer | purenet / fastest | purenet temp MiB | jax.grad temp MiB | jax.grad / purenet temp "
            "| MFLOP/step | purenet GFLOP/s | % of matmul peak | bf16 policy ms (/ purenet) | bf16 temp MiB "
            "| XLA options | purenet ms without them (/ with) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        times = " | ".join("-" if r["peer_ms"][p] is None else f"{r['peer_ms'][p]:.2f} ({r['peer_ratio'][p]:.2f})"
                           for p in peers)
        ours_temp, ref_temp = r["purenet_temp_bytes"], r["peer_temp_bytes"][OURS_AUTODIFF]
        memory = f"{ref_temp / ours_temp:.2f}" if ours_temp else "-"  # "-": ours needs no temporaries
        plain = r["no_options_ms"]
        without = "-" if plain is None else f"{plain:.2f} ({plain / r['purenet_ms']:.2f})"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['purenet_ms']:.2f} | {times} | {r['fastest_peer']} | "
            f"{r['purenet_over_fastest']:.2f} | {ours_temp / 2**20:.2f} | {ref_temp / 2**20:.2f} | {memory} | "
            f"{r['purenet_flops'] / 1e6:.1f} | {r['purenet_gflops_per_s']:.1f} | "
            f"{100 * r['matmul_peak_fraction']:.0f}% | {r['bf16_ms']:.2f} ({r['bf16_over_purenet']:.2f}) | "
            f"{r['bf16_temp_bytes'] / 2**20:.2f} | {_options_text(r['compiler_options'])} | {without} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=common.positive_int, default=128,
                        help="batch size of the MLP and LeNet rows (the char models use 32, GPT 16)")
    parser.add_argument("--rounds", type=common.positive_int, default=30, help="timed calls of each step")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 3 rounds: checks the harness only")
    parser.add_argument("--models", nargs="+", metavar="NAME", choices=list(rows()),
                        help="only these rows (default: all but the GPT-2 124M row, which runs when named)")
    parser.add_argument("--no-compiler-options", action="store_true",
                        help="compile every JAX step without purenet.compiler's measured XLA options")
    parser.add_argument("--sweep-options", action="store_true",
                        help="instead: time purenet's step of each row under candidate XLA option sets")
    parser.add_argument("--extra-options", type=option_set, default=None, metavar="JSON",
                        help="with --sweep-options, one more set: '{\"xla_cpu_multi_thread_eigen\": false}'")
    parser.add_argument("--out-dir", default="runs/benchmark")
    args = parser.parse_args(argv)
    table_rows = rows(args.batch_size, quick=args.quick)
    rounds = 3 if args.quick else args.rounds
    if args.sweep_options:
        sets = OPTION_SETS | ({"extra": args.extra_options} if args.extra_options else {})
        names = args.models or [name for name, row in table_rows.items() if row.kind != "gpt2"]
        results = {name: sweep_row(table_rows[name], sets, rounds) for name in names}
        table = sweep_table(results, sets)
        print(f"jax {jax.__version__}, {jax.default_backend()}; each set's time over the time without options\n")
        print(table)
        out = pathlib.Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "option_sets.json").write_text(json.dumps(results, indent=2))
        return results
    peak = matmul_peak_gflops(256 if args.quick else 1024, rounds)
    names = args.models or [name for name, row in table_rows.items() if not row.opt_in]
    results = [bench_row(name, table_rows[name], min(rounds, table_rows[name].rounds or rounds), peak,
                         use_options=not args.no_compiler_options) for name in names]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, {jax.devices()[0].platform}"
    for package in ("flax", "equinox", "torch"):
        try:
            module = __import__(package)
        except ImportError:
            continue
        machine += f", {package} {module.__version__}"
        if package == "torch":
            machine += f" ({module.get_num_threads()} threads)"
    table = markdown(results)
    print(f"machine: {machine}; float32 matmul peak measured: {peak:.1f} GFLOP/s\n\n{table}")
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": machine, "matmul_peak_gflops": peak,
                                                   "rows": results}, indent=2))
    (out / "table.md").write_text(table + "\n")
    return results


if __name__ == "__main__":
    main()

"""Benchmark: purenet's handwritten-VJP training step against a `jax.value_and_grad` step.

For each reference model both steps are compiled in this one process over the same `apply`, parameters,
batch and optimizer (Adam). After a warm-up the two are timed in interleaved rounds with
`block_until_ready`; the table gives median step times and their ratio, XLA's `memory_analysis()`
temporary bytes and their ratio, `cost_analysis()` FLOPs, achieved GFLOP/s and the fraction of this
machine's float32 matmul peak, measured here as well. Where PyTorch is installed (`pip install -e
.[bench]`, never needed otherwise) the same model's PyTorch CPU training step (same shapes, Adam,
cross-entropy) is timed as a last column, in its own rounds after the two JAX steps'.

    python experiments/benchmark.py                 # full run, writes runs/benchmark/{results.json,table.md}
    python experiments/benchmark.py --quick         # tiny configuration (harness check only)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp

import common
from purenet import losses, optim
from purenet.models import CharLMConfig, GPTConfig, LeNetConfig, char_lm, gpt, lenet5, mlp


def mlp_784():
    return mlp((512, 512), 10), (784,)


def lenet(algorithm="auto"):
    """The demo's LeNet-5; `algorithm` of its first convolution (1 input channel): 'auto' takes the
    per-tap formulation on the CPU, 'xla' keeps lax.conv (the row that shows what the formulation is worth)."""
    return lenet5(LeNetConfig(algorithm=algorithm)), (28, 28, 1)


def char_lstm():
    """The reference character-level LSTM: ids (N, 64) over 65 characters -> logits (N, 64, 65)."""
    return char_lm(CharLMConfig(65, "lstm", hidden=256, layers=1, embedding=64)), (64,), 65


GPT = dict(vocab_size=65, context=128, layers=4, d_model=128, heads=4, hidden=512)


def gpt_row(context: int = GPT["context"]):
    """The reference GPT: pre-LN, tanh-GELU feed-forward 512, learned positions, tied head, attention
    keeping the logsumexp (probabilities recomputed): ids (N, 128) -> logits (N, 128, 65)."""
    config = GPTConfig(**(GPT | {"context": context}), residuals="logsumexp")
    return gpt(config), (context,), GPT["vocab_size"]


# A builder returns (model, feature shape), or (model, sequence shape, vocabulary size) for token models,
# which get integer ids as inputs and one label per token.
MODELS = {"MLP 784-512-512-10": mlp_784, "LeNet-5": lenet, "LeNet-5, conv1 on lax.conv": lambda: lenet("xla"),
          "char-LSTM 65-64-256": char_lstm, "GPT 4L d128 h4 T128": gpt_row}
# reference batches, replacing --batch-size except under --quick
BATCH_SIZES = {"char-LSTM 65-64-256": 32, "GPT 4L d128 h4 T128": 16}


def torch_step(name, x, y):
    """The same model and step in PyTorch on the CPU (NCHW for LeNet-5, like its layers), or None when
    PyTorch is not installed. -> step() running forward, backward and Adam once, returning the loss."""
    try:
        import numpy as np
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.manual_seed(0)
    x, y = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()
    if name.startswith("MLP"):
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    elif name.startswith("LeNet-5"):
        model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 3), nn.Tanh(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84),
                              nn.Tanh(), nn.Linear(84, 10))
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    elif name.startswith("GPT"):
        model, x = _torch_gpt(torch, nn), x.long()
    else:
        class CharLSTM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.out = nn.Embedding(65, 64), nn.Linear(256, 65)
                self.lstm = nn.LSTM(64, 256, batch_first=True)

            def forward(self, ids):
                return self.out(self.lstm(self.embed(ids))[0])

        model, x = CharLSTM(), x.long()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _torch_gpt(torch, nn):
    """The reference GPT in PyTorch as minGPT writes it: fused qkv, F.scaled_dot_product_attention."""
    F, c, h, vocab = nn.functional, GPT["d_model"], GPT["heads"], GPT["vocab_size"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.fc, self.out = nn.Linear(c, GPT["hidden"]), nn.Linear(GPT["hidden"], c)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = (z.view(n, t, h, c // h).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(c, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, c)
            x = x + self.proj(y)
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, c), nn.Embedding(GPT["context"], c)
            self.blocks = nn.ModuleList(Block() for _ in range(GPT["layers"]))
            self.ln_f, self.bias = nn.LayerNorm(c), nn.Parameter(torch.zeros(vocab))

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.T + self.bias  # the tied head

    return Model()


def build_steps(model, loss, optimizer, state):
    """-> (handwritten step, jax.value_and_grad step), both `(params, opt_state, x, y) -> (params,
    opt_state, loss)` and identical but for how the gradient is computed."""

    def update(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state

    def handwritten(params, opt_state, x, y):
        logits, _, pullback = model.vjp(params, state, x, train=True)
        value, loss_pullback = loss.vjp(logits, y)
        grads, _ = pullback(loss_pullback(jnp.ones_like(value)))
        return (*update(params, opt_state, grads), value)

    def autodiff(params, opt_state, x, y):
        def objective(p):
            return loss.apply(model.apply(p, state, x, train=True)[0], y)

        value, grads = jax.value_and_grad(objective)(params)
        return (*update(params, opt_state, grads), value)

    return handwritten, autodiff


def compile_step(step, *args):
    compiled = jax.jit(step).lower(*args).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, int(memory.temp_size_in_bytes), float(cost.get("flops", float("nan")))


def time_interleaved(fns, args, rounds, warmup=3):
    """Median seconds per call of each fn, timed alternately so drift hits both alike."""
    for fn in fns:
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def matmul_peak_gflops(n=1024, rounds=20):
    """Measured float32 matmul throughput of this machine (GFLOP/s) on an n x n product."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    (seconds,) = time_interleaved([matmul], (a,), rounds)
    return 2 * n**3 / seconds / 1e9


def bench_model(name, builder, batch_size, rounds):
    model, feature_shape, *vocab = builder()
    key_init, key_x, key_y = jax.random.split(jax.random.PRNGKey(0), 3)
    _, params, state = model.init(key_init, (batch_size, *feature_shape))
    if vocab:
        x = jax.random.randint(key_x, (batch_size, *feature_shape), 0, vocab[0])
        y = jax.random.randint(key_y, (batch_size, *feature_shape), 0, vocab[0])
    else:
        x = jax.random.normal(key_x, (batch_size, *feature_shape), jnp.float32)
        y = jax.random.randint(key_y, (batch_size,), 0, 10)
    loss = losses.softmax_cross_entropy()
    optimizer = optim.adam(1e-3)
    opt_state = optimizer.init(params)
    args = (params, opt_state, x, y)
    handwritten, autodiff = build_steps(model, loss, optimizer, state)
    ours, ours_temp, flops = compile_step(handwritten, *args)
    ref, ref_temp, ref_flops = compile_step(autodiff, *args)
    ours_s, ref_s = time_interleaved([ours, ref], args, rounds)
    # PyTorch's OpenMP threads spin for a while after each call and would slow whichever step ran next,
    # so its rounds run after the two JAX steps', not interleaved with them.
    torch_fn = torch_step(name, x, y)
    (torch_s,) = time_interleaved([lambda *_: torch_fn()], args, rounds) if torch_fn else (None,)
    return {
        "model": name, "batch": batch_size,
        "purenet_ms": ours_s * 1e3, "jax_grad_ms": ref_s * 1e3, "time_ratio": ours_s / ref_s,
        "purenet_temp_bytes": ours_temp, "jax_grad_temp_bytes": ref_temp,
        "memory_ratio": ours_temp / ref_temp if ref_temp else 1.0 if ours_temp == 0 else None,
        "purenet_flops": flops, "jax_grad_flops": ref_flops, "purenet_gflops_per_s": flops / ours_s / 1e9,
        "torch_cpu_ms": None if torch_s is None else torch_s * 1e3,  # None (JSON null) without PyTorch
    }


def markdown(rows, peak):
    head = ("| model | batch | purenet ms | jax.grad ms | time ratio | purenet temp MiB | jax.grad temp MiB "
            "| memory ratio | MFLOP/step | purenet GFLOP/s | % of matmul peak | PyTorch CPU ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    def number(value):  # None (no reference, no PyTorch) prints as "-"
        return "-" if value is None else f"{value:.2f}"

    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['purenet_ms']:.2f} | {r['jax_grad_ms']:.2f} | "
            f"{r['time_ratio']:.2f} | {r['purenet_temp_bytes'] / 2**20:.2f} | "
            f"{r['jax_grad_temp_bytes'] / 2**20:.2f} | {number(r['memory_ratio'])} | {r['purenet_flops'] / 1e6:.1f} | "
            f"{r['purenet_gflops_per_s']:.1f} | {100 * r['purenet_gflops_per_s'] / peak:.0f}% | "
            f"{number(r['torch_cpu_ms'])} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=common.positive_int, default=128,
                        help="batch size (the char-LSTM uses 32)")
    parser.add_argument("--rounds", type=common.positive_int, default=30)
    parser.add_argument("--quick", action="store_true", help="batch 4, 3 rounds: checks the harness only")
    parser.add_argument("--out-dir", default="runs/benchmark")
    args = parser.parse_args(argv)
    models = dict(MODELS)
    if args.quick:
        args.batch_size, args.rounds = 4, 3
        models["GPT 4L d128 h4 T128"] = partial(gpt_row, context=16)  # the harness only: a short context
    peak = matmul_peak_gflops(256 if args.quick else 1024, args.rounds)
    batch = {name: BATCH_SIZES.get(name, args.batch_size) for name in MODELS}
    if args.quick:
        batch = dict.fromkeys(MODELS, args.batch_size)
    rows = [bench_model(name, builder, batch[name], args.rounds) for name, builder in models.items()]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, {jax.devices()[0].platform}"
    try:
        import torch
        machine += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        pass
    table = markdown(rows, peak)
    print(f"machine: {machine}; float32 matmul peak measured: {peak:.1f} GFLOP/s\n\n{table}")
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": machine, "matmul_peak_gflops": peak,
                                                   "rows": rows}, indent=2))
    (out / "table.md").write_text(table + "\n")
    return rows


if __name__ == "__main__":
    main()

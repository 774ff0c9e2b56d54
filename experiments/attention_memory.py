"""XLA's temporary memory of one attention training step (forward + pullback), by residual form, and
what causal query blocks save.

`dot_product_attention_vjp` with residuals="probs" keeps the (N, H, T, S) probabilities;
"logsumexp" keeps the per-row logsumexp and recomputes the probabilities block by block. For each T the
step (causal self-attention, N = 1, 4 heads of size 64, float32) is compiled, not run, and
`compiled.memory_analysis().temp_size_in_bytes` read: deterministic, whatever the machine's load.

`--query-block-sizes` adds a second table: the same step with causal query blocks of each size (and
one block, the whole square, as the reference), XLA's FLOPs and temporaries of each, and with
`--rounds R` its time (median of R interleaved rounds, in one process, at `--batch`), each as a ratio
to one block. That table measured the backend's `QUERY_BLOCK_SIZE`.

    python experiments/attention_memory.py                 # T = 512, 1024, 2048
    python experiments/attention_memory.py --lengths 256 512 --block-size 64
    python experiments/attention_memory.py --lengths 128 --batch 16 --query-block-sizes 16 32 64 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import common
from purenet.layers.attention import RESIDUALS, dot_product_attention_vjp


def _step(residuals, block_size, query_block_size):
    def step(q, k, v, dout):
        _, pullback = dot_product_attention_vjp(q, k, v, is_causal=True, residuals=residuals,
                                                block_size=block_size, query_block_size=query_block_size)
        return pullback(dout)[:3]
    return step


def temporary_bytes(residuals: str, steps: int, *, heads: int = 4, head_dim: int = 64,
                    block_size: int | None = None, query_block_size: int | None = None) -> int:
    x = jax.ShapeDtypeStruct((1, steps, heads, head_dim), jnp.float32)
    compiled = jax.jit(_step(residuals, block_size, query_block_size)).lower(x, x, x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def query_blocks(steps: int, sizes, *, batch: int = 1, heads: int = 4, head_dim: int = 64,
                 block_size: int | None = None, rounds: int = 0) -> list[dict]:
    """Per residual form and query block size (`steps`, one block, first): XLA's flops and temporary
    bytes of the compiled step, and with `rounds` the median seconds of interleaved rounds."""
    x = jnp.asarray(jax.random.normal(jax.random.PRNGKey(0), (batch, steps, heads, head_dim)))
    rows = []
    for residuals in RESIDUALS:
        for size in (steps, *sizes):
            compiled = jax.jit(_step(residuals, block_size, size)).lower(x, x, x, x).compile()
            cost = compiled.cost_analysis()
            rows.append({"residuals": residuals, "T": steps, "query_block_size": size, "compiled": compiled,
                         "flops": (cost[0] if isinstance(cost, list) else cost)["flops"],
                         "temp_bytes": compiled.memory_analysis().temp_size_in_bytes, "times": []})
    for row in rows:
        jax.block_until_ready(row["compiled"](x, x, x, x))  # warm
    for _ in range(rounds):
        for row in rows:
            start = time.perf_counter()
            jax.block_until_ready(row["compiled"](x, x, x, x))
            row["times"].append(time.perf_counter() - start)
    for row in rows:
        del row["compiled"]
        row["seconds"] = statistics.median(row.pop("times")) if rounds else None
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=common.positive_int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--block-size", type=common.positive_int, default=None,
                        help="keys per block (default: by backend)")
    parser.add_argument("--query-block-sizes", type=common.positive_int, nargs="+", default=[],
                        help="also compare causal query blocks of these sizes against one block")
    parser.add_argument("--batch", type=common.positive_int, default=1, help="N of the query-block table")
    parser.add_argument("--rounds", type=common.non_negative_int, default=0,
                        help="time the query-block table over this many interleaved rounds (0: compile only)")
    args = parser.parse_args(argv)
    rows = []
    print("| residuals | T | temporary MiB | growth per doubling of T |")
    print("|---|---|---|---|")
    for residuals in RESIDUALS:
        previous = None
        for steps in args.lengths:
            size = temporary_bytes(residuals, steps, block_size=args.block_size)
            growth = "" if previous is None else f"{size / previous:.2f}x"
            print(f"| {residuals} | {steps} | {size / 2**20:.1f} | {growth} |")
            rows.append({"residuals": residuals, "T": steps, "temp_bytes": size})
            previous = size
    if args.query_block_sizes:
        print(f"\ncausal query blocks, N = {args.batch}, 4 heads of 64; ratios to one block of the same form")
        print("| residuals | T | query block | FLOPs | temporary MiB | ms | time |")
        print("|---|---|---|---|---|---|---|")
        for steps in args.lengths:
            table = query_blocks(steps, args.query_block_sizes, batch=args.batch, block_size=args.block_size,
                                 rounds=args.rounds)
            for row in table:
                whole = next(r for r in table if r["residuals"] == row["residuals"] and r["query_block_size"] == steps)
                ms, ratio = ("-", "-") if row["seconds"] is None else \
                    (f"{row['seconds'] * 1e3:.2f}", f"{row['seconds'] / whole['seconds']:.2f}")
                label = "one" if row["query_block_size"] == steps else row["query_block_size"]
                print(f"| {row['residuals']} | {steps} | {label} | {row['flops'] / whole['flops']:.2f} | "
                      f"{row['temp_bytes'] / 2**20:.1f} | {ms} | {ratio} |")
            rows += table
    return rows


if __name__ == "__main__":
    main()

"""XLA's temporary memory of one attention training step (forward + pullback), by residual form.

`dot_product_attention_vjp` with residuals="probs" keeps the (N, H, T, S) probabilities;
"logsumexp" keeps the per-row logsumexp and recomputes the probabilities block by block. For each T the
step (causal self-attention, N = 1, 4 heads of size 64, float32) is compiled, not run, and
`compiled.memory_analysis().temp_size_in_bytes` read: deterministic, whatever the machine's load.

    python experiments/attention_memory.py                 # T = 512, 1024, 2048
    python experiments/attention_memory.py --lengths 256 512 --block-size 64
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import common
from purenet.layers.attention import RESIDUALS, dot_product_attention_vjp


def temporary_bytes(residuals: str, steps: int, *, heads: int = 4, head_dim: int = 64,
                    block_size: int | None = None) -> int:
    def step(q, k, v, dout):
        _, pullback = dot_product_attention_vjp(q, k, v, is_causal=True, residuals=residuals,
                                                block_size=block_size)
        return pullback(dout)[:3]

    x = jax.ShapeDtypeStruct((1, steps, heads, head_dim), jnp.float32)
    return jax.jit(step).lower(x, x, x, x).compile().memory_analysis().temp_size_in_bytes


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=common.positive_int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--block-size", type=common.positive_int, default=None,
                        help="keys per block (default: by backend)")
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
    return rows


if __name__ == "__main__":
    main()

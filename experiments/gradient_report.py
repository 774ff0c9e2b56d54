"""Print the worst relative gradient error per layer family over the test registry, float64 and float32.

    python experiments/gradient_report.py            # every registry row
    python experiments/gradient_report.py conv gru   # rows whose id starts with one of these
"""

import sys
import pathlib

import jax

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "tests"))

import jax.numpy as jnp  # noqa: E402
from registry import CASES  # noqa: E402

from purenet.check import check_layer, random_input  # noqa: E402


def family(case_id: str) -> str:
    return case_id.split("-")[0]


def main(prefixes):
    worst: dict[str, dict[str, float]] = {}
    for case in CASES:
        if prefixes and not case.id.startswith(tuple(prefixes)):
            continue
        for dtype in (jnp.float64, jnp.float32):
            key = jax.random.PRNGKey(0)
            x_key = jax.random.fold_in(key, 1)
            x = case.make_x(x_key, case.in_shape) if case.make_x else random_input(x_key, case.in_shape, dtype)
            report = check_layer(case.build(), case.in_shape, key=key, dtype=dtype, x=x, train=case.train)
            grads = [e.max_rel for name, e in report.items() if ".y" not in name and ".state" not in name]
            row = worst.setdefault(family(case.id), {"rows": 0, "float64": 0.0, "float32": 0.0})
            row[jnp.dtype(dtype).name] = max(row[jnp.dtype(dtype).name], max(grads, default=0.0))
        row["rows"] += 1
    print("| family | registry rows | worst rel. error float64 | worst rel. error float32 |")
    print("|---|---|---|---|")
    for name, row in worst.items():
        print(f"| {name} | {row['rows']} | {row['float64']:.1e} | {row['float32']:.1e} |")


if __name__ == "__main__":
    main(sys.argv[1:])

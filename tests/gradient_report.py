"""Print the worst relative gradient error per layer family over the test registry, float64 and float32.

    python -m tests.gradient_report            # every registry row (from the repository root)
    python -m tests.gradient_report conv gru   # rows whose id starts with one of these
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)  # before the registry builds its float64 rows

import jax.numpy as jnp  # noqa: E402

from purenet.check import check_layer  # noqa: E402
from tests.registry import CASES  # noqa: E402
from tests.test_registry import _x  # noqa: E402


def family(case_id: str) -> str:
    return case_id.split("-")[0]


def main(prefixes):
    worst: dict[str, dict[str, float]] = {}
    for case in CASES:
        if prefixes and not case.id.startswith(tuple(prefixes)):
            continue
        row = worst.setdefault(family(case.id), {"rows": 0, "float64": 0.0, "float32": 0.0})
        for dtype in (jnp.float64, jnp.float32):
            key = jax.random.PRNGKey(0)
            x = _x(case, jax.random.fold_in(key, 1), dtype)
            report = check_layer(case.build(), case.in_shape, key=key, dtype=dtype, x=x, train=case.train)
            grads = [e.max_rel for name, e in report.items() if ".y" not in name and ".state" not in name]
            row[jnp.dtype(dtype).name] = max(row[jnp.dtype(dtype).name], max(grads, default=0.0))
        row["rows"] += 1
    print("| family | registry rows | worst rel. error float64 | worst rel. error float32 |")
    print("|---|---|---|---|")
    for name, row in worst.items():
        print(f"| {name} | {row['rows']} | {row['float64']:.1e} | {row['float32']:.1e} |")


def parse_args(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m tests.gradient_report", description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="report only rows whose id starts with one of these "
                                                    "(e.g. conv gru); default: every row")
    prefixes = parser.parse_args(argv).prefixes
    families = {family(case.id) for case in CASES}
    unknown = [p for p in prefixes if not any(case.id.startswith(p) for case in CASES)]
    if unknown:
        parser.error(f"no registry row starts with {', '.join(map(repr, unknown))}; families: "
                     f"{', '.join(sorted(families))}")
    return prefixes


if __name__ == "__main__":
    main(parse_args())

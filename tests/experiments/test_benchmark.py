"""The benchmark harness in a tiny configuration: correctness of its output only, no timing assertions."""

import importlib.util
import json

import pytest

from tests.helpers import load_experiment


@pytest.fixture(scope="module")
def benchmark():
    return load_experiment("benchmark")  # with experiments/ importable: it shares common's flag types


def test_quick_benchmark_writes_table_and_json(benchmark, tmp_path):
    rows = benchmark.main(["--quick", "--out-dir", str(tmp_path)])
    assert [r["model"] for r in rows] == list(benchmark.MODELS)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["matmul_peak_gflops"] > 0
    has_torch = importlib.util.find_spec("torch") is not None  # the optional PyTorch column
    for row in rows:
        assert row["purenet_flops"] > 0 and row["jax_grad_flops"] > 0
        assert row["purenet_temp_bytes"] >= 0 and row["time_ratio"] > 0
        assert (row["torch_cpu_ms"] is None) != has_torch
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and table[2].startswith("| MLP")

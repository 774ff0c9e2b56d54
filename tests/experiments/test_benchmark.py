"""The benchmark compares like with like: every peer, built from purenet's params, computes the same loss and
gradients as purenet's handwritten step on one batch; the harness, in a tiny configuration, writes its table
and JSON. No timing assertions."""

import functools
import importlib.util
import json
import math

import jax
import numpy as np
import pytest

from purenet import compiler, losses
from purenet.check import compare, upcast
from tests.helpers import load_experiment

BENCH = load_experiment("benchmark")  # with experiments/ importable: it shares common's flag types
ROWS = BENCH.rows(quick=True)
LIBRARIES = {"plain jax.grad": (), "Flax": ("flax", "optax"), "Equinox": ("equinox", "optax"),
             "PyTorch CPU": ("torch",)}  # what each peer needs installed
# Each row's peers (GPT-2's: PyTorch running transformers' GPT2LMHeadModel; none for the purenet-only
# "LeNet-5, conv1 on lax.conv"), on every row but "LeNet-5": each peer
# builds both LeNets with the same code, only the kernels and paddings differ, and "LeNet-5 classic" covers
# both paddings (conv1 'SAME', conv2 'VALID', so both branches of the flattened width) and the same
# purenet layers (conv1 on its one-channel taps, as "auto" picks for both).
CASES = [(name, peer) for name, row in ROWS.items() if name != "LeNet-5" for peer in row.peers]


def installed(peer: str) -> bool:
    return all(importlib.util.find_spec(lib) is not None for lib in LIBRARIES[peer])


@functools.cache
def purenet_case(name: str):
    """-> (params, x, y, loss, grads): params of the row's purenet model (its tree and shapes), drawn at
    random so that no bias is zero and no weight has a structure a wrong layout could hide behind, one
    quick batch, and purenet's handwritten loss and gradients there."""
    row = ROWS[name]
    model, in_shape = BENCH.purenet_model(row)
    _, shapes, state = jax.eval_shape(lambda key: model.init(key, in_shape), jax.random.PRNGKey(0))
    # Drawn by numpy: nothing to compile but the steps compared (a jitted draw of the GPT's params alone
    # compiled longer than its gradient). Weights ~ N(0, 1 / fan-in), biases and norm scales ~ N(0, 0.1^2).
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * (math.prod(s.shape[:-1]) ** -0.5
                                                                      if len(s.shape) > 1 else 0.1)).astype(s.dtype),
                          shapes)
    # The batch of `BENCH.make_batch`'s shapes and dtypes: ids and per-token labels over the vocabulary, or
    # float32 images with one label in [0, classes) each.
    if row.kind in ("char", "gpt", "gpt2"):
        x, y = (rng.integers(0, row.config.vocab_size, in_shape).astype(np.int32) for _ in range(2))
    else:
        classes = row.config[-1] if row.kind == "mlp" else row.config.num_classes
        x, y = rng.standard_normal(in_shape).astype(np.float32), rng.integers(0, classes, in_shape[:1]).astype(np.int32)
    handwritten = functools.partial(BENCH.handwritten_loss_and_grads, model, losses.softmax_cross_entropy(), state)
    loss, grads = jax.jit(handwritten)(params, x, y)
    truth = jax.jit(handwritten)(*upcast((params, x, y)))  # the same step in float64
    return params, x, y, float(loss), grads, truth


@pytest.mark.parametrize("name, peer", CASES)
def test_peer_computes_purenet_loss_and_gradients(name, peer):
    for library in LIBRARIES[peer] + (("transformers",) if ROWS[name].kind == "gpt2" else ()):
        pytest.importorskip(library)  # GPT-2's PyTorch peer is transformers' reference model
    made = BENCH.PEERS[peer](ROWS[name])
    if made is None:
        assert (peer, ROWS[name].kind) == ("Equinox", "gpt")  # the one row without a natural form
        pytest.skip("Equinox has no GPT here")
    params, x, y, loss, grads, truth = purenet_case(name)
    with jax.numpy_rank_promotion("allow"):  # the peers broadcast biases as their users write them
        peer_loss, peer_grads = BENCH.peer_loss_and_grads(made, params, x, y)
    assert jax.tree.structure(peer_grads) == jax.tree.structure(grads)
    # float32 both; the suite's rule (tests/README.md), our handwritten step in float64 the truth
    compare((np.float32(peer_loss), jax.tree.map(np.asarray, peer_grads)), (np.float32(loss), grads), truth=truth,
            what=f"{peer}, {name}: (loss, dparams)")


def test_quick_benchmark_writes_table_and_json(tmp_path):
    # One row every peer runs and the purenet-only one (the peers' forwards are checked on every row above).
    names = ["MLP 784-512-512-10", "LeNet-5, conv1 on lax.conv"]
    with jax.numpy_rank_promotion("allow"):
        rows = BENCH.main(["--quick", "--models", *names, "--out-dir", str(tmp_path)])
    assert [r["model"] for r in rows] == names
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["matmul_peak_gflops"] > 0
    for row in rows:
        assert row["purenet_flops"] > 0 and row["jax_grad_flops"] > 0 and row["purenet_temp_bytes"] >= 0
        assert row["bf16_ms"] > 0 and row["bf16_temp_bytes"] >= 0  # the bf16-policy column
        assert row["bf16_over_purenet"] == pytest.approx(row["bf16_ms"] / row["purenet_ms"])
        expected = {BENCH.OURS_AUTODIFF} | {p for p in ROWS[row["model"]].peers if installed(p)}
        assert {p for p, ms in row["peer_ms"].items() if ms is not None} == expected
        assert all(row["peer_ratio"][p] > 0 for p in expected) and row["fastest_peer"] in expected
        assert row["purenet_over_fastest"] == pytest.approx(row["purenet_ms"] / row["peer_ms"][row["fastest_peer"]])
        # the XLA options purenet.compiler picks for the row's step (a convolution: the table's rule), and
        # purenet's step timed without them beside the others when there are any
        holds_conv = row["model"] != "MLP 784-512-512-10"
        rules = dict(compiler.MEASURED.get((jax.default_backend(), compiler._version()), ()))
        assert row["compiler_options"] == (rules.get("conv_general_dilated", {}) if holds_conv else {})
        assert (row["no_options_ms"] is None) == (not row["compiler_options"]) and (row["no_options_ms"] or 1) > 0
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and table[3].startswith("| LeNet-5, conv1 on lax.conv | 4 |")
    cells = [c.strip() for c in table[3].split("|")]
    # purenet-only: every peer but jax.grad of our forward is "-" (and the no-options column without options)
    assert cells.count("-") == len(BENCH.PEERS) + (rows[1]["no_options_ms"] is None)


def test_option_sweep_quick(tmp_path):
    names = ["MLP 784-512-512-10", "LeNet-5 classic"]
    with jax.numpy_rank_promotion("allow"):
        results = BENCH.main(["--quick", "--sweep-options", "--models", *names, "--out-dir", str(tmp_path),
                              "--extra-options", '{"xla_cpu_multi_thread_eigen": false}'])
    assert list(results) == names and json.loads((tmp_path / "option_sets.json").read_text()) == results
    rules = dict(compiler.MEASURED.get((jax.default_backend(), compiler._version()), ()))
    for name, result in results.items():
        assert set(result["ratios"]) == {"none", "none ms", *BENCH.OPTION_SETS, "extra"}
        assert result["ratios"]["none"] == 1.0 and all(r > 0 for r in result["ratios"].values())
        # LeNet's second layer is a convolution
        assert result["auto"] == (rules.get("conv_general_dilated", {}) if name != names[0] else {})

"""The autodiff boundary (DESIGN.md section 2): no module under purenet/ but the checker uses JAX's
autodiff, checked statically (imports and attribute uses) and at run time (patched to raise)."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import pytest

import purenet
import purenet.layers as L
from purenet.combinators import parallel, residual, select, serial
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.optim import adam
from purenet.training import make_train_step

FORBIDDEN = {"grad", "value_and_grad", "vjp", "jvp", "linearize", "linear_transpose", "custom_vjp",
             "custom_jvp", "hessian", "jacfwd", "jacrev"}
ALLOWED = {"check.py"}
LIBRARY = pathlib.Path(purenet.__file__).parent


def autodiff_uses(source: str) -> list[str]:
    """JAX autodiff entry points a module imports, or reaches as an attribute of the jax module (under
    any alias): `jax.grad`, `import jax as j; j.vjp`. Our own `layer.vjp` is not JAX's."""
    tree = ast.parse(source)
    jax_names = {"jax"} | {
        a.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
        for a in node.names if a.name == "jax" and a.asname
    }
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jax":
            hits += [f"from {node.module} import {a.name}" for a in node.names if a.name in FORBIDDEN]
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in jax_names:
                hits.append(f"{ast.unparse(node)} (line {node.lineno})")
    return hits


def test_static_scan_finds_a_planted_use():
    planted = "import jax as j\nfrom jax import value_and_grad\ng = j.grad(f)\nclass A:\n  c = jax.custom_vjp\n"
    assert len(autodiff_uses(planted)) == 3
    assert autodiff_uses("import jax\ny = jax.numpy.sum(x)\ny, pb = layer.vjp(p, s, x)\n") == []


def test_library_uses_no_autodiff_outside_checker():
    modules = [p for p in LIBRARY.rglob("*.py") if p.name not in ALLOWED]
    assert len(modules) >= 3
    offenders = {str(p.relative_to(LIBRARY)): autodiff_uses(p.read_text()) for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def _every_family_model():
    """A two-tower model over {"image": (N, 8, 8, 1), "ids": (N, 6)} using a layer from every module of
    purenet/layers and every combinator. -> (model, the layer modules it used)."""
    used = set()

    def use(ctor, *args, **kwargs):
        used.add(ctor.__module__)
        return ctor(*args, **kwargs)

    image = serial(select("image"), use(L.RandomShift, 1), use(L.Conv2D, 3, 3, padding="SAME"), use(L.BatchNorm), use(L.Relu),
                   use(L.MaxPool2D, 2), use(L.ConvTranspose2D, 2, 2, strides=2), use(L.AvgPool2D, 2),
                   use(L.GlobalAvgPool), use(L.Dense, 4))
    text = serial(select("ids"), use(L.Embedding, 7, 4), use(L.LearnedPositions, 6), use(L.ClassToken),
                  use(L.FeedForward, 8, activation="silu", gated=True, dropout=0.1),
                  use(L.MultiHeadAttention, 2, is_causal=True, rotary=True, dropout=0.1),
                  use(L.EncoderBlock, 2, 8, dropout=0.1, residuals="logsumexp"), use(L.LSTM, 4), use(L.GRU, 4),
                  use(L.Bidirectional, use(L.SimpleRNN, 2), use(L.SimpleRNN, 2, reverse=True)),
                  use(L.Conv1D, 4, 3, padding="SAME"), use(L.MaxPool1D, 2), use(L.TokenAt, 0), use(L.Dense, 4))
    head = serial(use(L.LayerNorm), use(L.Dropout, 0.2), use(L.Gelu),
                  residual(serial(use(L.RMSNorm), use(L.Dense, 4))), use(L.Reshape, (2, 2)), use(L.Softmax),
                  use(L.Flatten), use(L.Dense, 3))
    return serial(towers=parallel(image=image, text=text, merge="sum"), head=head), used


def test_guard_model_uses_every_layer_family():
    _, used = _every_family_model()
    families = {f"purenet.layers.{p.stem}" for p in (LIBRARY / "layers").glob("*.py") if p.stem != "__init__"}
    # Tensor-parallel layers run only inside jax.shard_map: tests/training/eight_devices.py traces their
    # pullbacks under the same guard on 8 simulated devices.
    assert used == families - {"purenet.layers.tensor_parallel"}


def test_training_step_traces_without_autodiff(autodiff_forbidden, key):
    # The whole jitted training step (every layer family's vjp, the loss's, Adam) traced under JAX autodiff
    # patched to raise; then the patch itself is shown to work. Tracing runs every Python call the step
    # makes, so a use of JAX's autodiff anywhere in it raises here; compiling and running the traced
    # program would call nothing more from Python. The init is traced too (shapes, no arrays).
    model, _ = _every_family_model()
    in_shape = {"image": (4, 8, 8, 1), "ids": (4, 6)}
    optimizer = adam(1e-3)
    params, state, opt_state = jax.eval_shape(
        lambda k: (lambda p, s: (p, s, optimizer.init(p)))(*init_model(model, k, in_shape)[1:]), key)
    x = {"image": jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32), "ids": jax.ShapeDtypeStruct((4, 6), jnp.int32)}
    batch = {"x": x, "y": jax.ShapeDtypeStruct((4,), jnp.int32)}
    step = make_train_step(model, softmax_cross_entropy(), optimizer)
    new_params, _, _, metrics = step.trace(params, state, opt_state, batch, key).out_info
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    assert new_params["head"][7]["w"].shape == (4, 3) and metrics["loss"].shape == ()
    with pytest.raises(AssertionError, match="autodiff was called"):
        jax.grad(lambda x: jnp.sum(x))(jnp.ones(2))

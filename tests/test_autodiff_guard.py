"""The autodiff boundary (DESIGN.md section 2): no module under purenet/ but the checker uses JAX's
autodiff, checked statically (imports and attribute uses) and at run time (patched to raise)."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import pytest

import purenet
from purenet.core import serial
from purenet.dense import Dense

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


def test_model_gradient_traces_without_autodiff(autodiff_forbidden, key):
    model = serial(Dense(8), Dense(3))
    _, params, state = model.init(key, (4, 5))
    x = jnp.ones((4, 5))

    @jax.jit
    def gradient(params, x):
        y, _, pullback = model.vjp(params, state, x)
        return pullback(jnp.ones_like(y))

    dparams, dx = gradient(params, x)
    assert dx.shape == x.shape and dparams[0]["w"].shape == (5, 8)
    with pytest.raises(AssertionError, match="autodiff was called"):
        jax.grad(lambda x: jnp.sum(x))(x)

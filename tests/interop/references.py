"""Our side of the reference comparisons (tests/interop/): each architecture's outputs, loss and parameter
gradients on the fixture's inputs, computed with purenet's handwritten pullbacks, the gradients mapped
to the reference's tensor names through the same table the loaders use; and the comparison rules.

Rules (DESIGN.md section 3, purenet/check.py): outputs and losses within 1e-5 relative in float32 and
1e-10 in float64, normwise per tensor (max|ours - ref| / max|ref|). Gradients in float64 within 1e-10;
in float32 by the low-precision rule: our float32 gradient's error against the float64 truth (the
reference's float64 gradient at the same float32 parameters, cast up exactly) at most 16 times the
reference's own float32 error against that truth, floored at float32's epsilon (`low_precision`).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from purenet import check, interop
from purenet.interop import _tensors
from purenet.losses import TokenTargets, masked_softmax_cross_entropy, softmax_cross_entropy

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "interop"
TINY_GPT2 = pathlib.Path(interop.__file__).resolve().parents[1] / "data" / "tiny_gpt2.safetensors"
ARCHITECTURES = ("gpt2", "bert", "vit", "resnet18")
FAMILIES = {"gpt2": interop.GPT2, "bert": interop.BERT, "vit": interop.VIT, "resnet18": interop.RESNET18}
LOADERS = {"gpt2": interop.load_gpt2, "bert": interop.load_bert, "vit": interop.load_vit,
           "resnet18": interop.load_resnet18}
SAVERS = {"gpt2": interop.save_gpt2, "bert": interop.save_bert, "vit": interop.save_vit,
          "resnet18": interop.save_resnet18}
CONFIGS = {"gpt2": interop.gpt2_config, "bert": interop.bert_config, "vit": interop.vit_config,
           "resnet18": interop.resnet18_config}
OUTPUT_RTOL = {"float32": 1e-5, "float64": 1e-10}
GRADIENT_RTOL_64 = 1e-10


def weights(arch: str) -> pathlib.Path:
    return TINY_GPT2 if arch == "gpt2" else DATA / f"{arch}.safetensors"


def read(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def fixture(arch: str) -> dict[str, np.ndarray]:
    return read(DATA / f"{arch}_reference.safetensors")


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


def ours(arch: str, config, model, params, state, inputs: dict, dtype) -> dict[str, np.ndarray]:
    """{"logits", "loss", "grad/<reference name>", ...} of purenet's model (of `config`) in `dtype` (float32
    parameters cast to it), named as the reference fixture names them."""
    params, state = _cast(params, dtype), _cast(state, dtype)
    train = arch == "resnet18"
    if arch == "gpt2":
        ids = jnp.asarray(inputs["ids"])
        x, loss = ids, masked_softmax_cross_entropy()
        target = TokenTargets(jnp.roll(ids, -1, axis=1), jnp.ones(ids.shape, bool).at[:, -1].set(False))
    elif arch == "bert":
        labels = jnp.asarray(inputs["labels"])
        x = (jnp.asarray(inputs["ids"]), jnp.asarray(inputs["token_type_ids"]), jnp.asarray(inputs["attention_mask"]))
        loss, target = masked_softmax_cross_entropy(), TokenTargets(jnp.maximum(labels, 0), labels >= 0)
    else:
        images = inputs["pixel_values" if arch == "vit" else "images"]
        x, loss, target = jnp.asarray(images.transpose(0, 2, 3, 1), dtype), softmax_cross_entropy(), inputs["labels"]

    @jax.jit
    def step(params, state, x, target):
        y, new_state, pullback = model.vjp(params, state, x, train=train)
        logits = y[0] if arch == "bert" else y
        value, loss_pullback = loss.vjp(logits, target)
        dlogits = loss_pullback(jnp.ones_like(value))
        if arch == "bert":  # the fixture's loss adds <pooled, c>: pooled's cotangent is c
            dparams, _ = pullback((dlogits, jnp.asarray(inputs["pooled_cotangent"], dtype)))
        else:
            dparams, _ = pullback(dlogits)
        out = {"logits": logits, "loss": value, "dparams": dparams, "state": new_state}
        if arch == "bert":
            out["pooled"] = y[1]
        if train:
            out["eval_logits"] = model.apply(params, new_state, x, train=False)[0]  # as torch: updated
        return out

    out = step(params, state, x, target)
    family = FAMILIES[arch]
    grads = _tensors.to_tensors(family, out.pop("dparams"), state, config)
    parameters = {e.name for e in family.entries(config) if e.path[0] == "params"}
    result = {f"grad/{name}": a for name, a in grads.items() if name in parameters}
    new_state = out.pop("state")
    if train:  # the running statistics after one training forward, under torch's buffer names
        running = _tensors.to_tensors(family, jax.tree.map(jnp.zeros_like, params), new_state, config)
        result |= {f"running/{name}": a for name, a in running.items() if name.endswith(("_mean", "_var"))}
    return result | {k: np.asarray(v) for k, v in out.items()}


def inputs_of(reference: dict) -> dict:
    return {k.split("/", 1)[1]: v for k, v in reference.items() if k.startswith("input/")}


def part(reference: dict, label: str) -> dict:
    return {k.split("/", 1)[1]: v for k, v in reference.items() if k.startswith(label + "/")}


def relative(a, b) -> float:
    """max|a - b| / max|b| (normwise), the suite's per-leaf measure."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    return err / scale if scale else err


def low_precision(ours32: dict, ref32: dict, truth: dict, what: str) -> dict[str, tuple[float, float]]:
    """The suite's float32 rule per tensor (tests/README.md) -> {name: (our relative error against the
    truth, its bound)}; raises naming every tensor over its bound."""
    report = check.compare(ours32, ref32, truth=truth, what=what)
    return {name: (e.max_rel, e.rtol) for name, e in report.items()}


def compare(arch: str, ours64: dict, ours32: dict, reference: dict) -> dict[str, float]:
    """Every comparison of one architecture; -> the largest relative error of each kind (for the report)."""
    ref32, ref64 = part(reference, "float32"), part(reference, "float64")
    assert set(ours32) == set(ref32), (sorted(set(ours32) ^ set(ref32)))
    figures = {}
    for label, got, ref in (("float32", ours32, ref32), ("float64", ours64, ref64)):
        for name in ref:
            if name.startswith("grad/"):
                continue
            err = relative(got[name], ref[name])
            assert err <= OUTPUT_RTOL[label], f"{arch} {label} {name}: rel error {err:.3e} > {OUTPUT_RTOL[label]:.0e}"
            kind = name.split("/")[0]
            figures[f"{label} {kind}"] = max(figures.get(f"{label} {kind}", 0.0), err)
    grads = [n for n in ref64 if n.startswith("grad/")]
    # The checker's compare: a gradient that is zero up to rounding (attention's key bias: softmax ignores
    # a shift shared by every key) is measured against the largest gradient, not its own noise.
    report = check.compare({n: ours64[n] for n in grads}, {n: ref64[n] for n in grads}, rtol=GRADIENT_RTOL_64,
                           what=f"{arch}.float64")
    figures["float64 grad"] = max(e.max_rel for e in report.values())
    rule = low_precision({n: ours32[n] for n in grads}, {n: ref32[n] for n in grads}, {n: ref64[n] for n in grads},
                         f"{arch}.float32")
    figures["float32 grad"] = max(e for e, _ in rule.values())
    figures["float32 grad / its bound"] = max(e / b for e, b in rule.values())
    return figures

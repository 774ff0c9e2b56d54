"""Our side of the reference comparisons (tests/interop/): each architecture's outputs, loss and parameter
gradients on the fixture's inputs, computed with purenet's handwritten pullbacks, the gradients mapped
to the reference's tensor names through the same table the loaders use; and the comparison rules.

Rules (tests/README.md, purenet/check.py): outputs, losses and gradients within 1e-10 in float64,
normwise per tensor (max|ours - ref| / max|ref|); in float32 by the low-precision rule: our error against
the float64 truth (the reference's float64 result at the same float32 parameters and inputs, cast up
exactly) at most 16 times the reference's own float32 error against that truth, floored at float32's
epsilon.
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
RTOL_64 = 1e-10


def weights(arch: str) -> pathlib.Path:
    return TINY_GPT2 if arch == "gpt2" else DATA / f"{arch}.safetensors"


def read(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def fixture(arch: str) -> dict[str, np.ndarray]:
    return read(DATA / f"{arch}_reference.safetensors")


def _cast(tree, dtype):  # by numpy: jnp would compile a conversion per leaf shape
    return jax.tree.map(lambda a: np.asarray(a).astype(dtype), tree)


def ours(arch: str, config, model, params, state, inputs: dict, dtype) -> dict[str, np.ndarray]:
    """{"logits", "loss", "grad/<reference name>", ...} of purenet's model (of `config`) in `dtype` (float32
    parameters cast to it), named as the reference fixture names them."""
    params, state = _cast(params, dtype), _cast(state, dtype)
    train = arch == "resnet18"
    # Inputs and targets built by numpy (jnp would compile each operation on its own).
    if arch == "gpt2":
        ids = np.asarray(inputs["ids"])
        x, loss = ids, masked_softmax_cross_entropy()
        valid = np.ones(ids.shape, bool)
        valid[:, -1] = False
        target = TokenTargets(np.roll(ids, -1, axis=1), valid)
    elif arch == "bert":
        labels = np.asarray(inputs["labels"])
        x = (np.asarray(inputs["ids"]), np.asarray(inputs["token_type_ids"]), np.asarray(inputs["attention_mask"]))
        loss, target = masked_softmax_cross_entropy(), TokenTargets(np.maximum(labels, 0), labels >= 0)
    else:
        images = inputs["pixel_values" if arch == "vit" else "images"]
        x, loss, target = images.transpose(0, 2, 3, 1).astype(dtype), softmax_cross_entropy(), inputs["labels"]

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
        running = _tensors.to_tensors(family, jax.tree.map(np.zeros_like, params), new_state, config)
        result |= {f"running/{name}": a for name, a in running.items() if name.endswith(("_mean", "_var"))}
    return result | {k: np.asarray(v) for k, v in out.items()}


def inputs_of(reference: dict) -> dict:
    return {k.split("/", 1)[1]: v for k, v in reference.items() if k.startswith("input/")}


def part(reference: dict, label: str) -> dict:
    return {k.split("/", 1)[1]: v for k, v in reference.items() if k.startswith(label + "/")}


def compare(arch: str, ours64: dict, ours32: dict, reference: dict) -> dict[str, float]:
    """Every comparison of one architecture, by the suite's rules (tests/README.md): float64 within 1e-10,
    float32 against the reference's float64 result at the same point (the truth). -> the largest relative
    error of each kind (for the report)."""
    ref32, ref64 = part(reference, "float32"), part(reference, "float64")
    assert set(ours32) == set(ref32) == set(ref64), (sorted(set(ours32) ^ set(ref32)))
    # The checker's compare: a gradient that is zero up to rounding (attention's key bias: softmax ignores
    # a shift shared by every key) is measured against the largest gradient of its tree, not its own noise.
    ours64, ours32 = ({n: np.reshape(ours[n], np.shape(ref64[n])) for n in ref64} for ours in (ours64, ours32))
    reports = {"float64": check.compare(ours64, ref64, rtol=RTOL_64, what=f"{arch}.float64"),
               "float32": check.compare(ours32, ref32, truth=ref64, what=f"{arch}.float32")}
    figures = {}
    for label, report in reports.items():
        for name, e in report.items():
            kind = name.split("'")[1].split("/")[0]  # grad, logits, loss, ...
            figures[f"{label} {kind}"] = max(figures.get(f"{label} {kind}", 0.0), e.max_rel)
            if label == "float32":
                figures["float32 / its bound"] = max(figures.get("float32 / its bound", 0.0), e.max_rel / e.rtol)
    return figures

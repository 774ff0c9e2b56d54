"""README's lists, kept in step with the code: the layer files named in "Layout" and in "What is in the
box", and the layers the "Decode" bullet says implement step-by-step decoding, against `can_decode` over
the registry's rows (tests/registry.py) of every public layer."""

import inspect
import pathlib
import re

import purenet as pn
import purenet.layers
from purenet.layers import activations
from tests.helpers import code_blocks
from tests.registry import CASES

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LAYER_FILES = {p.stem for p in (ROOT / "purenet" / "layers").glob("*.py") if p.stem != "__init__"}

# Public layers without a registry row (their checks need a device mesh: tests/layers/test_tensor_parallel.py).
WITHOUT_ROWS = {
    "ColumnParallelDense": lambda: pn.layers.ColumnParallelDense(4, axis_name="model"),
    "RowParallelDense": lambda: pn.layers.RowParallelDense(4, axis_name="model"),
    "ParallelFeedForward": lambda: pn.layers.ParallelFeedForward(8, axis_name="model"),
    "ParallelAttention": lambda: pn.layers.ParallelAttention(2, axis_name="model"),
}


def _public_layer_constructors() -> set[str]:
    return {name for name, obj in vars(purenet.layers).items()
            if not name.startswith("_") and callable(obj)
            and inspect.signature(obj).return_annotation in ("Layer", pn.Layer)}


def test_layout_lists_every_layer_file():
    layout = next(body for _, _, body in code_blocks(README, "text") if "purenet/layers/" in body)
    listed = re.search(r"purenet/layers/\s+[^(]*\(([^)]*)\)", layout)
    assert listed, "README's Layout should list the layer files as 'purenet/layers/  ... (dense, conv, ...)'"
    assert set(re.findall(r"\w+", listed[1])) == LAYER_FILES


def test_box_table_names_every_layer_module():
    rows = re.findall(r"^\| `purenet\.layers` \(([^)]*)\)", README, re.M)
    assert {name for row in rows for name in re.findall(r"`(\w+)`", row)} == LAYER_FILES


def test_decode_list_is_what_can_decode_says():
    bullet = re.search(r"^- \*\*Decode\.\*\*(.*?)^- ", README, re.M | re.S)[1]
    sentence = re.search(r"The layers that implement it(.*?)A layer that cannot", bullet, re.S)[1]
    public = _public_layer_constructors()
    named = {name for name in re.findall(r"`(\w+)`", sentence) if name in public}
    activation_layers = {name for name in public if getattr(purenet.layers, name).__module__ == activations.__name__}
    if "every activation" in sentence:
        named |= activation_layers - {"Activation"}  # Activation(name) builds one of the others

    decodes, covered = set(), set()
    layers = [case.build() for case in CASES] + [build() for build in WITHOUT_ROWS.values()]
    for layer in layers:
        covered.add(layer.name)
        if pn.can_decode(layer):
            decodes.add(layer.name)
    missing = public - covered - {"Activation"}
    assert not missing, f"public layers with no registry row here to judge them by: {sorted(missing)}"
    assert named == decodes & public, (
        f"README's decode list says {sorted(named)}, can_decode says {sorted(decodes & public)}")

"""MkDocs hook: the API reference, generated at build time from the packages' public names.

A name is public when it is in its module's `__all__`; in a module without `__all__`, when it is a
function or class defined there (a package: any purenet function, class or module it binds). Every
role page below lists its modules' public names, grouped by the file that defines them, one
mkdocstrings entry each, so a name added to `purenet.models.__all__` appears with no edit here. The
build warns (and `mkdocs build --strict` fails) when a documented name has no docstring, or when a
public name reachable from `import purenet` is on no page (then add its module to ROLES).
`tests/test_docs.py` imports `public_names` and `reference_entries` from this file.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.reference")

# page -> (title, one-line introduction, modules whose public names the page documents)
ROLES = {
    "reference/core.md": ("Core: the contract and combinators",
                          "The layer contract (`Layer`, `Decode`, `Loss`), the pytree rules of cotangents, the "
                          "combinators that are layers themselves, the `Tape` that runs a model's named "
                          "children, the weight initializers, and `summary` (a model's table of shapes and "
                          "parameters).",
                          ["purenet.core", "purenet.combinators", "purenet.initializers", "purenet.summaries"]),
    "reference/ops.md": ("Paired primitives (ops)",
                         "The math several layers share, each forward beside its pullback.",
                         ["purenet.ops"]),
    "reference/layers.md": ("Layers",
                            "One file per layer family; each an `(init, apply, vjp)` triple with a handwritten "
                            "pullback. `pn.Dense` is `purenet.layers.Dense`.",
                            ["purenet.layers"]),
    "reference/losses.md": ("Losses",
                            "`Loss(apply, vjp)`: a value and its handwritten pullback with respect to the "
                            "prediction.",
                            ["purenet.losses"]),
    "reference/optim.md": ("Optimizers and schedules",
                           "Pure `Optimizer(init, update)` pairs in the shape of optax's, the transforms they "
                           "chain, and learning-rate schedules.",
                           ["purenet.optim", "purenet.optim.schedules"]),
    "reference/precision.md": ("Mixed precision",
                               "A `Policy` of parameter, compute and output dtypes, and `with_policy`, which runs a "
                               "model under it (loss scaling is in `purenet.optim`).",
                               ["purenet.precision"]),
    "reference/training.md": ("Training and checkpoints",
                              "The jitted training step made only of handwritten VJPs, `run_steps` (the one "
                              "training loop), `fit` on it, set-prediction training, metrics, checkpoints and "
                              "weights-only files, data "
                              "parallelism over a device mesh, the non-finite guard, and the XLA options each "
                              "compiled step takes.",
                              ["purenet.training", "purenet.training.metrics", "purenet.training.parallel",
                               "purenet.debug", "purenet.compiler"]),
    "reference/data.md": ("Data",
                          "Loaders (offline by default), the shipped samples, toy sets and batching.",
                          ["purenet.data"]),
    "reference/models.md": ("Models",
                            "The model zoo: each a small config and a constructor returning a `Layer`, or a "
                            "model function with its own pullback; decoding and search.",
                            ["purenet.models"]),
    "reference/interop.md": ("Interop: reference weights in and out",
                             "GPT-2, BERT, ViT and ResNet-18 from and to their reference implementations' "
                             "safetensors files, under the reference's own tensor names.",
                             ["purenet.interop"]),
    "reference/check.md": ("The checker and the bridge",
                           "Our pullbacks against JAX's autodiff (the only module allowed to call it), and "
                           "`as_jax_function` (also `purenet.as_jax_function`), which exposes a layer to "
                           "`jax.grad`.",
                           ["purenet.check"]),
}


def _import(name: str) -> types.ModuleType:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


def _ours(obj) -> bool:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "") or ""
    return name == "purenet" or name.startswith("purenet.")


def public_names(module_name: str) -> list[str]:
    """The public names of a module, in its `__all__`'s order, or its namespace's."""
    module = _import(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    is_package = hasattr(module, "__path__")
    names = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, types.ModuleType):
            if _ours(obj) and not obj.__name__.rsplit(".", 1)[-1].startswith("_"):
                names.append(name)
        elif inspect.isfunction(obj) or inspect.isclass(obj):
            if obj.__module__ == module_name or (is_package and _ours(obj)):
                names.append(name)
    return names


def reference_entries() -> dict[str, list[tuple[str, str]]]:
    """page -> [(module, name)] for every documented (non-module) public name of the page's modules."""
    entries = {}
    for page, (_, _, modules) in ROLES.items():
        entries[page] = [(m, n) for m in modules for n in public_names(m)
                         if not isinstance(getattr(_import(m), n), types.ModuleType)]
    return entries


def reachable_public(root: str = "purenet") -> dict[str, list[str]]:
    """module -> its public non-module names, for every public module reachable from `root`."""
    seen, todo, out = set(), [root], {}
    while todo:
        module_name = todo.pop()
        if module_name in seen:
            continue
        seen.add(module_name)
        module = _import(module_name)
        out[module_name] = []
        for name in public_names(module_name):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                if _ours(obj):
                    todo.append(obj.__name__)
            else:
                out[module_name].append(name)
    return out


def _griffe_package():
    import griffe

    return griffe.load("purenet", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)


def canonical_path(package, module: str, name: str) -> str:
    """Where `module.name` is defined: `purenet.layers.Dense` -> `purenet.layers.dense.Dense`. Found at
    run time for functions and classes (`purenet.models.gpt` is a module to a static reader, the function
    `gpt` to Python), statically (griffe's alias) for other objects."""
    obj = getattr(_import(module), name)
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and _ours(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    member = package[f"{module}.{name}".removeprefix("purenet.")]
    return member.final_target.path if member.is_alias else member.path


def _resolve(package, path: str):
    obj = package[path.removeprefix("purenet.")]
    return obj.final_target if obj.is_alias else obj


def _summary(docstring) -> str:
    """A module docstring's first paragraph, `[` escaped outside code spans (`params["w"][i]` is no link)."""
    text = docstring.value.strip().split("\n\n", 1)[0].replace("\n", " ") if docstring else ""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("[", "\\[") for i, p in enumerate(parts))


def _source_link(obj) -> str:
    """A link to the object's lines on its source page (docs/hooks/sources.py makes those pages)."""
    file = Path(obj.filepath).resolve().relative_to(ROOT).as_posix()
    qualname = obj.path.removeprefix(obj.module.path + ".")
    anchor = qualname if obj.kind.value in ("function", "class") else f"L-{obj.lineno}"
    return f"[source: `{file}`](../code/{file}.md#{anchor}){{ .source-link }}"


def _page(package, title: str, intro: str, entries: list[tuple[str, str]]) -> str:
    groups: dict[str, list[tuple[int, str]]] = {}
    for module, name in entries:
        try:
            path = canonical_path(package, module, name)
            obj = _resolve(package, path)
        except Exception as error:  # noqa: BLE001 (griffe raises several kinds)
            log.warning(f"reference: cannot resolve {module}.{name}: {error}")
            continue
        if not obj.docstring or not obj.docstring.value.strip():
            log.warning(f"reference: {module}.{name} is public and has no docstring "
                        f"({obj.relative_filepath}:{obj.lineno})")
        groups.setdefault(obj.module.path, []).append((obj.lineno or 0, path, _source_link(obj)))
    lines = [f"# {title}", "", intro, ""]
    for defining in sorted(groups):
        lines += [f"## `{defining}`", "", _summary(package[defining.removeprefix("purenet.")].docstring)
                  if defining != "purenet" else "", ""]
        for _, path, source in sorted(groups[defining]):
            lines += [f"::: {path}", "", source, ""]
    return "\n".join(lines)


def _index(entries: dict[str, list[tuple[str, str]]]) -> str:
    total = sum(len(v) for v in entries.values())
    lines = ["# API reference", "",
             f"Generated from the code at build time: {total} public names, each with its docstring, signature "
             "and source. `import purenet as pn` re-exports the names of the layers, combinators, losses and "
             "training; the other roles are reached as `pn.optim`, `pn.data`, `pn.models`, `pn.check`.", "",
             "| page | modules | names |", "|---|---|---|"]
    for page, (title, _, modules) in ROLES.items():
        link = page.removeprefix("reference/")
        lines.append(f"| [{title}]({link}) | {', '.join(f'`{m}`' for m in modules)} | {len(entries[page])} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    entries = reference_entries()
    package = _griffe_package()
    documented = {id(getattr(_import(m), n)) for page in entries.values() for m, n in page}
    for module_name, names in reachable_public().items():
        for name in names:
            if id(getattr(_import(module_name), name)) not in documented:
                log.warning(f"reference: {module_name}.{name} is public but on no reference page: add its module "
                            f"to ROLES in docs/hooks/reference.py")
    for page, (title, intro, _) in ROLES.items():
        files.append(File.generated(config, page, content=_page(package, title, intro, entries[page])))
    files.append(File.generated(config, "reference/index.md", content=_index(entries)))
    return files

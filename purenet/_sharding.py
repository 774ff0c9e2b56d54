"""Typing helpers for code traced inside `jax.shard_map`: which mesh axes a value varies over, and a cast
that makes a scan's carry vary like the data it takes in. Ground floor: imports JAX only."""

from __future__ import annotations

from typing import Any

import jax


def axis_bound(axis_name: Any) -> bool:
    """Whether `axis_name` is bound where this is traced (inside `jax.shard_map`, `jax.vmap(...,
    axis_name=)`, `pmap`): a collective over it would run, rather than fail with JAX's unbound-name error."""
    try:
        jax.lax.axis_size(axis_name)
    except NameError:
        return False
    return True


def varying_axes(x: Any) -> frozenset:
    """The mesh axes over which `x` may differ between shards, when traced inside `jax.shard_map`;
    empty elsewhere."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    axes = getattr(manual, "varying", None) if manual is not None else getattr(aval, "vma", None)
    return frozenset(axes or ())


def vary_like(tree: Any, *refs: Any) -> Any:
    """`tree` cast to vary over every mesh axis some leaf of `refs` varies over (`lax.pcast`): a
    `lax.scan` whose carry starts from constants (zeros) and takes in per-shard data must type its
    carry as varying from the start under `jax.shard_map`. Outside shard_map: `tree` unchanged."""
    axes = frozenset().union(*(varying_axes(r) for r in jax.tree_util.tree_leaves(refs)))

    def cast(a):
        missing = tuple(sorted(axes - varying_axes(a)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree_util.tree_map(cast, tree) if axes else tree

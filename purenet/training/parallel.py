"""Data parallelism on JAX's own engine: the batch split over one axis of a device mesh, each device
running the handwritten forward and backward pass on its shard, one all-reduce averaging the result.

The step builders of `purenet.training.step` (`make_train_step(..., mesh=mesh)`, `make_eval_step`,
`data_parallel_grad`, the building block for hand-made loops) and `fit(..., mesh=mesh)` use this module,
which knows nothing of models or losses. The per-shard work runs under `jax.shard_map` (with its
varying/replicated checks on); params, state and optimizer state are replicated, the batch is sharded
along its first axis over `axis_name`. Meshes from `jax.make_mesh` with Explicit axes (JAX's default)
and with Auto axes both work.

What a user sees (README "Scaling out"):
- gradients: every shard's loss is the mean over its examples, so the mean of the shards' gradients
  (`lax.pmean`) is the full batch's gradient when shards are of equal size; the batch size must be a
  multiple of the axis size. Losses that average over a data-dependent count (masked tokens) average
  per shard.
- one collective: the gradients, the metrics and any state that differs between shards (BatchNorm's
  running statistics without `axis_name`) are averaged in one flat all-reduce (in the widest dtype),
  not one per leaf.
- BatchNorm(axis_name=...) with the same axis name takes its batch statistics over the whole batch.
- randomness: each shard's key is `fold_in(key, shard index)`, so Dropout masks differ between shards.
- many hosts: after `jax.distributed.initialize`, a mesh over `jax.devices()` spans every process;
  `shard_batch` builds the global batch from each process's own part.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from purenet._checks import fail
from purenet._sharding import varying_axes
from purenet.core import PyTree


def check_mesh(owner: str, mesh: Any, axis_name: str) -> int:
    """-> the size of `axis_name` in `mesh`, failing with the names it has."""
    if not isinstance(mesh, Mesh):
        fail(owner, f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((jax.device_count(),), "
                    f"('{axis_name}',))), got {type(mesh).__name__}", TypeError)
    if axis_name not in mesh.axis_names:
        fail(owner, f"axis_name (={axis_name!r}) is not an axis of the mesh, whose axes are {mesh.axis_names}")
    return mesh.shape[axis_name]


def place(tree: PyTree, mesh: Mesh, spec: PartitionSpec) -> PyTree:
    """Inside `jax.jit`: lay every leaf of `tree` out as `spec` on `mesh` (`jax.reshard` on Explicit
    axes, a sharding constraint on Auto ones)."""
    sharding = NamedSharding(mesh, spec)
    explicit = any(t == AxisType.Explicit for t in mesh.axis_types)
    move = (lambda a: jax.reshard(a, sharding)) if explicit else (
        lambda a: lax.with_sharding_constraint(a, sharding))
    return jax.tree_util.tree_map(move, tree)


def pmean_flat(tree: PyTree, axis_name: str) -> PyTree:
    """`lax.pmean` of every floating-point leaf of `tree` that varies over `axis_name`, as ONE all-reduce:
    the leaves are raveled into one buffer of their widest dtype, averaged, split back and cast back to
    their own dtypes. Other leaves pass unchanged."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    indices = [i for i, leaf in enumerate(leaves)
               if jnp.issubdtype(leaf.dtype, jnp.floating) and axis_name in varying_axes(leaf)]
    if indices:
        dtype = jnp.result_type(*(leaves[i].dtype for i in indices))
        flat = lax.pmean(jnp.concatenate([leaves[i].reshape(-1).astype(dtype) for i in indices]), axis_name)
        offsets = np.cumsum([0] + [leaves[i].size for i in indices])
        for i, start, stop in zip(indices, offsets[:-1], offsets[1:]):
            leaves[i] = flat[start:stop].reshape(leaves[i].shape).astype(leaves[i].dtype)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_batch(owner: str, batch, size: int, axis_name: str) -> None:
    for leaf in jax.tree_util.tree_leaves(batch):
        if leaf.shape[0] % size:
            fail(owner, f"the batch size (={leaf.shape[0]}) must be a multiple of the mesh axis "
                        f"'{axis_name}' (={size} devices) to split it evenly")


def data_parallel(owner: str, local: Callable, mesh: Mesh, axis_name: str) -> Callable:
    """`local(params, state, batch, key) -> tree` run on each shard of the batch (params, state and key
    replicated; key folded with the shard index), its output averaged by `pmean_flat`:
    -> `fn(params, state, batch, key) -> tree`, to be called inside `jax.jit`."""
    size = check_mesh(owner, mesh, axis_name)
    replicated, sharded = PartitionSpec(), PartitionSpec(axis_name)

    def per_shard(params, state, batch, key):
        key = None if key is None else jax.random.fold_in(key, lax.axis_index(axis_name))
        return pmean_flat(local(params, state, batch, key), axis_name)

    mapped = jax.shard_map(per_shard, mesh=mesh, in_specs=(replicated, replicated, sharded, replicated),
                           out_specs=replicated)

    def fn(params, state, batch, key):
        _check_batch(owner, batch, size, axis_name)
        params, state, key = place((params, state, key), mesh, replicated)
        return mapped(params, state, place(batch, mesh, sharded), key)

    return fn


def shard_batch(batch: PyTree, mesh: Mesh, *, axis_name: str = "data") -> PyTree:
    """The global batch, sharded along its first axis over `axis_name`, from this process's part of it
    (with one process: the whole batch). Each process passes the same number of examples."""
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)),
                                  batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """`tree` (params, state, optimizer state) copied to every device of `mesh`."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)

"""One process of tests/training/test_parallel.py's multi-host check: `--processes 2` joins a job of two
processes over loopback (jax.distributed, Gloo collectives on the CPU), each with 4 devices of an 8-device
mesh; it trains an MLP with synced BatchNorm for 10 steps, each process feeding its own part of every
batch, and process 0 writes the checkpoint (gathered from every process) and the losses. test_parallel.py
runs `train` on its own single device with the full batches (float32, and float64: the truth the float32
runs are held to, tests/README.md) and compares."""

import argparse

import jax
import numpy as np

BATCH, STEPS = 32, 10


def train(out, dtype="float32", mesh=None, process_id=0, processes=1):
    """10 Adam steps from PRNGKey(0)'s initialization (float32's draws, cast), batches of BATCH drawn in
    float32 (cast); with `mesh`, over its 8 devices with BatchNorm synced, this process feeding its part
    of each batch; without, on one device. Writes the params, BatchNorm's state and the losses to `out`
    (an .npz; process 0 only)."""
    from purenet import optim
    from purenet.combinators import serial
    from purenet.core import init_model
    from purenet.layers import Activation, BatchNorm, Dense
    from purenet.losses import softmax_cross_entropy
    from purenet.training import make_train_step, save_checkpoint
    from purenet.training.parallel import replicate, shard_batch

    model = serial(fc1=Dense(16, use_bias=False), bn=BatchNorm(axis_name=None if mesh is None else "data"),
                   act=Activation("tanh"), head=Dense(4))
    # jitted: eagerly, every initializer's draw is a program of its own to compile
    params, state = jax.jit(lambda key: init_model(model, key, (-1, 6), dtype=dtype)[1:])(jax.random.PRNGKey(0))
    optimizer = optim.adam(1e-2)
    opt_state = optimizer.init(params)
    if mesh is not None:
        params, state, opt_state = replicate((params, state, opt_state), mesh)
    step = make_train_step(model, softmax_cross_entropy(), optimizer, mesh=mesh)
    rng = np.random.default_rng(0)
    part = slice(process_id * BATCH // processes, (process_id + 1) * BATCH // processes)
    losses = []
    for t in range(STEPS):
        x = rng.normal(size=(BATCH, 6)).astype(np.float32).astype(dtype)
        batch = {"x": x[part], "y": (x[part, 0] > 0).astype(np.int32) + 2 * (x[part, 1] > 0)}
        params, state, opt_state, metrics = step(params, state, opt_state,
                                                 batch if mesh is None else shard_batch(batch, mesh), jax.random.PRNGKey(t))
        losses.append(float(metrics["loss"]))
    save_checkpoint(out, params=params, state=state, opt_state=(), step=STEPS, key=None)
    if process_id == 0:
        with np.load(out) as saved:
            entries = {name: saved[name] for name in saved.files if not name.startswith("__")}
        np.savez(out, losses=np.array(losses, dtype), **entries)
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.processes,
                                   process_id=args.process_id, initialization_timeout=60)
    assert jax.device_count() == 8, jax.devices()
    losses = train(args.out, mesh=jax.make_mesh((8,), ("data",)), process_id=args.process_id,
                   processes=args.processes)
    print(f"process {args.process_id}: losses {losses[0]:.4f} -> {losses[-1]:.4f}")

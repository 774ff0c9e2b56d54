"""One process of tests/training/test_parallel.py's multi-host check: `--processes 2` joins a job of two
processes over loopback (jax.distributed, Gloo collectives on the CPU), `--processes 1` runs alone; either
way an 8-device mesh trains an MLP with synced BatchNorm for 10 steps, each process feeding its own part
of every batch, and process 0 writes the checkpoint (gathered from every process) and the losses.
`--float64` runs the same in float64 (1 process): the truth the float32 runs are held to (tests/README.md)."""

import argparse

import jax

parser = argparse.ArgumentParser()
parser.add_argument("--process-id", type=int, required=True)
parser.add_argument("--processes", type=int, required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--float64", action="store_true")
args = parser.parse_args()
jax.config.update("jax_enable_x64", args.float64)
dtype = "float64" if args.float64 else "float32"
if args.processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.processes,
                               process_id=args.process_id, initialization_timeout=60)

import numpy as np  # noqa: E402

from purenet import optim  # noqa: E402
from purenet.combinators import serial  # noqa: E402
from purenet.core import init_model  # noqa: E402
from purenet.layers import Activation, BatchNorm, Dense  # noqa: E402
from purenet.losses import softmax_cross_entropy  # noqa: E402
from purenet.training import make_train_step, save_checkpoint  # noqa: E402
from purenet.training.parallel import replicate, shard_batch  # noqa: E402

BATCH, STEPS = 32, 10
assert jax.device_count() == 8, jax.devices()
mesh = jax.make_mesh((8,), ("data",))
model = serial(fc1=Dense(16, use_bias=False), bn=BatchNorm(axis_name="data"), act=Activation("tanh"), head=Dense(4))
_, params, state = init_model(model, jax.random.PRNGKey(0), (-1, 6), dtype=dtype)  # float32's draws, cast
optimizer = optim.adam(1e-2)
params, state, opt_state = replicate((params, state, optimizer.init(params)), mesh)
step = make_train_step(model, softmax_cross_entropy(), optimizer, mesh=mesh)
rng = np.random.default_rng(0)
part = slice(args.process_id * BATCH // args.processes, (args.process_id + 1) * BATCH // args.processes)
losses = []
for t in range(STEPS):
    x = rng.normal(size=(BATCH, 6)).astype(np.float32).astype(dtype)
    batch = {"x": x[part], "y": (x[part, 0] > 0).astype(np.int32) + 2 * (x[part, 1] > 0)}
    params, state, opt_state, metrics = step(params, state, opt_state, shard_batch(batch, mesh),
                                             jax.random.PRNGKey(t))
    losses.append(float(metrics["loss"]))
save_checkpoint(args.out, params=params, state=state, opt_state=(), step=STEPS, key=None)
if args.process_id == 0:
    with np.load(args.out) as saved:
        entries = {name: saved[name] for name in saved.files if not name.startswith("__")}
    np.savez(args.out, losses=np.array(losses, dtype), **entries)
print(f"process {args.process_id}: losses {losses[0]:.4f} -> {losses[-1]:.4f}")

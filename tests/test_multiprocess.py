"""Data parallelism across processes: two processes on 127.0.0.1 with two CPU devices each train the same
as one process with four devices, and only process 0 writes files.

The test starts every process itself (``jax.distributed.initialize`` with a free local port as the
coordinator, JAX's gloo CPU collectives) and bounds each in time. Run as a script, this file is that
worker, which is also how to try several hosts by hand (README, "Scaling out"):

    XLA_FLAGS=--xla_force_host_platform_device_count=2 PYTHONPATH=. python tests/test_multiprocess.py \\
        --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0 --out runs/two-hosts &
    XLA_FLAGS=--xla_force_host_platform_device_count=2 PYTHONPATH=. python tests/test_multiprocess.py \\
        --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1 --out runs/two-hosts
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGES, BATCH_SIZE = 1024, 128  # one epoch: 8 steps of 128 images, 32 per device
TIMEOUT_S = 300  # for each run of processes; one whose peer failed is killed at once, not left in a collective


# ----------------------------------------------------------------------------- the worker


def worker(argv=None) -> None:
    """One process: ``fit`` LeNet-5 for one epoch of the first 1,024 embedded training images on
    ``data_mesh()`` (every process's devices), checkpoints to ``OUT/process-I``, then
    ``OUT/result-I.json`` (what the process saw) and ``OUT/params-I.npz`` (its copy of the params)."""
    ap = argparse.ArgumentParser(description="one process of a multi-process fit")
    ap.add_argument("--coordinator", help="host:port of process 0 (omit for a single process)")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    if args.num_processes > 1:  # before anything else touches JAX
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)

    from tinyfn import data, models
    from tinyfn.train import data_mesh, fit, sgd

    ds = data.load_embedded("train")
    images, labels = ds.images[:IMAGES], ds.labels[:IMAGES]
    x = data.normalize(images, *data.normalization(images))
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    mesh = data_mesh()
    params, history = fit(
        model,
        params,
        (x, labels),
        epochs=1,
        batch_size=BATCH_SIZE,
        optimizer=sgd(0.05, momentum=0.9),
        key=jax.random.key(1),
        checkpoint_dir=args.out / f"process-{jax.process_index()}",
        quiet=True,
        mesh=mesh,
    )
    leaves = [np.asarray(a.addressable_data(0)) for a in jax.tree.leaves(params)]  # this process's replica
    np.savez(args.out / f"params-{jax.process_index()}.npz", *leaves)
    result = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "mesh_devices": int(mesh.devices.size),
        "local_devices": jax.local_device_count(),
        "train_loss": history["train_loss"],
    }
    (args.out / f"result-{jax.process_index()}.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- the test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, devices: int, *args: str) -> tuple[subprocess.Popen, Path]:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), *args]
    log = out / f"log-{len(list(out.glob('log-*')))}.txt"
    with open(log, "w") as sink:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT), log


def _finish(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    """Wait for every process, at most ``TIMEOUT_S`` in all; as soon as one fails (its peers would then wait in
    a collective) or the time is up, kill the rest and report that process's output."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(proc.poll() is None for proc, _ in procs):
            for i, (proc, log) in enumerate(procs):
                assert proc.poll() in (None, 0), (
                    f"process {i} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                )
            assert time.monotonic() < deadline, f"the processes did not finish within {TIMEOUT_S} s:\n" + "\n".join(
                log.read_text()[-2000:] for _, log in procs
            )
            time.sleep(0.2)
        for i, (proc, log) in enumerate(procs):
            assert proc.returncode == 0, f"process {i} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _load(out: Path, index: int):
    with np.load(out / f"params-{index}.npz") as npz:
        params = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return json.loads((out / f"result-{index}.json").read_text()), params


def test_two_processes_of_two_devices_train_as_one_process_of_four_and_only_process_0_writes(tmp_path):
    from tinyfn import models
    from tinyfn.train import load_checkpoint

    two, one = tmp_path / "two-processes", tmp_path / "one-process"
    two.mkdir()
    one.mkdir()
    coordinator = f"127.0.0.1:{_free_port()}"
    _finish(
        [_start(two, 2, "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)) for i in (0, 1)]
    )
    _finish([_start(one, 4)])

    (r0, p0), (r1, p1), (ref, pref) = _load(two, 0), _load(two, 1), _load(one, 0)
    assert [(r["process_index"], r["process_count"], r["mesh_devices"], r["local_devices"]) for r in (r0, r1, ref)] == [
        (0, 2, 4, 2),
        (1, 2, 4, 2),
        (0, 1, 4, 4),
    ]
    # the params are replicated: both processes hold the same ones, bit for bit
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))
    # same 4 shards of each batch as one process of four devices; only the all-reduce (gloo here) may add the
    # four partial gradients in another order, so float32 rounding is all that may differ
    assert len(p0) == len(pref) == 10
    for a, b in zip(p0, pref, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(r0["train_loss"], ref["train_loss"], rtol=2e-5)

    # only process 0 wrote its run directory, and its checkpoint holds the params it returned
    assert not (two / "process-1").exists() or not any((two / "process-1").iterdir())
    written = list((two / "process-0").glob("*.safetensors"))
    assert len(written) == 1, list((two / "process-0").iterdir())
    _, like = models.lenet5().init(jax.random.key(0), (None, 1, 28, 28))
    saved = load_checkpoint(written[0], like=like)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(saved.params), p0, strict=True))


if __name__ == "__main__":
    worker()

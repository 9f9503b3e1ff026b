"""Faults during a run: killed processes, signals, full disks, non-finite steps, bad labels; nothing lost."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import chex
import jax
import numpy as np
import pytest

from tinyfn.data import load_embedded, normalize
from tinyfn.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, serial
from tinyfn.train import CHECKPOINT_NAME, CheckpointError, fit, load_checkpoint, save_checkpoint, sgd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data():
    train = load_embedded("train")
    return normalize(train.images[:512], 0.286, 0.353), train.labels[:512]


def _model():
    return serial(Conv2D(4, 5, stride=2), ReLU(), MaxPool2D(2), Flatten(), Linear(10))


def _params():
    return _model().init(jax.random.key(0), (None, 1, 28, 28))[1]


# ----------------------------------------------------------------------------- saving under faults


@pytest.mark.parametrize(
    "fault, exc_type, reason",
    [
        ("create", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        ("write", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        ("replace", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_a_failed_save_says_why_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, fault, exc_type, reason):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _params(), step=1)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise exc_type

    if fault == "create":  # the temporary file cannot be created
        monkeypatch.setattr(os, "open", fail)
    elif fault == "write":
        real_fdopen = os.fdopen

        def fdopen(fd, mode):
            f = real_fdopen(fd, mode)
            f.write = fail
            return f

        monkeypatch.setattr(os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(
        type(exc_type),
        match=rf"could not save checkpoint .*c\.safetensors: {reason}.*previous checkpoint there is unchanged",
    ):
        save_checkpoint(path, jax.tree_util.tree_map(lambda a: a + 1, _params()), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left behind


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from tinyfn.train import save_checkpoint
    path, step = sys.argv[1], 0
    while True:  # each checkpoint holds 4 MB of the value `step`, so a torn file would show
        step += 1
        save_checkpoint(path, {"w": np.full((1024, 1024), step, np.float32)}, step=step)
        print(step, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    rng = np.random.default_rng(0)
    seen = []
    for kill in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        proc.stdout.readline()  # one checkpoint is complete
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)  # never a half file
        values = np.unique(np.asarray(ckpt.params["w"]))
        assert values.tolist() == [ckpt.step], (kill, values[:5], ckpt.step)
        seen.append(ckpt.step)
    assert max(seen) > 1


# ----------------------------------------------------------------------------- signals and resume

TRAINER = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from tinyfn.data import load_embedded, normalize
    from tinyfn.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, serial
    from tinyfn.train import fit, sgd
    train = load_embedded("train")
    x, y = normalize(train.images[:512], 0.286, 0.353), train.labels[:512]
    model = serial(Conv2D(4, 5, stride=2), ReLU(), MaxPool2D(2), Flatten(), Linear(10))
    params = model.init(jax.random.key(0), (None, 1, 28, 28))[1]
    started = lambda info: print("step", info.step, flush=True) if info.step == 2 else None
    try:
        fit(model, params, (x, y), epochs={epochs}, batch_size=16, optimizer=sgd(0.05, momentum=0.9),
            key=jax.random.key(1), checkpoint_dir=sys.argv[1], quiet=True,
            callbacks=[started, lambda info: __import__("time").sleep(0.02)])
    except KeyboardInterrupt as e:
        print("interrupted", getattr(e, "signum", None), flush=True)
        sys.exit(143)
    print("finished", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_at_the_step_and_resume_is_bit_identical(data, tmp_path, signum):
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER.format(epochs=2), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().startswith("step 2")
    time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and f"interrupted {int(signum)}" in out, (out, err[-2000:])
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    pos = saved.metadata["position"]
    assert 0 < pos["epoch"] * 32 + pos["batch"] < 64  # stopped mid-run, at a step boundary
    kw = dict(epochs=2, batch_size=16, optimizer=sgd(0.05, momentum=0.9), key=jax.random.key(1), quiet=True)
    resumed, _ = fit(_model(), _params(), data, checkpoint_dir=tmp_path, resume=True, **kw)
    straight, _ = fit(_model(), _params(), data, **kw)
    chex.assert_trees_all_equal(resumed, straight)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_finishes_the_run(data, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER.format(epochs=3), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().startswith("step 2")
    while not (tmp_path / CHECKPOINT_NAME).exists():  # the first epoch's checkpoint
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    kw = dict(epochs=3, batch_size=16, optimizer=sgd(0.05, momentum=0.9), key=jax.random.key(1), quiet=True)
    resumed, history = fit(_model(), _params(), data, checkpoint_dir=tmp_path, resume=True, **kw)
    straight, _ = fit(_model(), _params(), data, **kw)
    assert history["epoch"] == [1, 2, 3]
    chex.assert_trees_all_equal(resumed, straight)


# ----------------------------------------------------------------------------- inside the loop


def test_nonfinite_steps_can_be_skipped(data):
    x, y = data
    x = x.copy()
    x[37] = np.nan  # the one batch holding this image gives a NaN loss
    params, history = fit(
        _model(),
        _params(),
        (x, y),
        epochs=1,
        batch_size=32,
        optimizer=sgd(0.05),
        key=jax.random.key(0),
        quiet=True,
        on_nonfinite="skip",
    )
    assert history["skipped_steps"] == [1] and np.isfinite(history["train_loss"][0])
    assert all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(params))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        fit(
            _model(), _params(), (x, y), epochs=1, batch_size=32, optimizer=sgd(0.05), key=jax.random.key(0), quiet=True
        )
    with pytest.raises(ValueError, match="on_nonfinite must be 'stop' or 'skip', got 'ignore'"):
        fit(
            _model(),
            _params(),
            (x, y),
            epochs=1,
            batch_size=32,
            optimizer=sgd(0.05),
            key=jax.random.key(0),
            on_nonfinite="ignore",
        )


def test_labels_outside_the_models_outputs_are_refused(data):
    x, y = data
    y = y.copy()
    y[7] = 10
    with pytest.raises(
        ValueError, match=r"train_data: labels must be in 0\.\.9 \(the model has 10 outputs\), got 10 at index 7"
    ):
        fit(
            _model(), _params(), (x, y), epochs=1, batch_size=32, optimizer=sgd(0.05), key=jax.random.key(0), quiet=True
        )
    with pytest.raises(ValueError, match=r"eval_data: labels must be in 0\.\.9 .*got -1 at index 0"):
        fit(
            _model(),
            _params(),
            data,
            epochs=1,
            batch_size=32,
            optimizer=sgd(0.05),
            key=jax.random.key(0),
            quiet=True,
            eval_data=(x[:4], -np.ones(4, np.int32)),
        )


def test_fit_leaves_the_callers_params_usable(data):
    params = _params()
    kw = dict(epochs=1, batch_size=128, optimizer=sgd(0.05), key=jax.random.key(0), quiet=True)
    first, _ = fit(_model(), params, data, **kw)
    second, _ = fit(_model(), params, data, **kw)  # the step donates its buffers, never the caller's
    chex.assert_trees_all_equal(first, second)


# ----------------------------------------------------------------------------- damaged checkpoints


def _rewrite_header(path, edit):
    import json

    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header = edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + n :])


def test_checkpoint_headers_that_lie_are_refused(tmp_path):
    import json

    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _params())

    def shift(h):
        h["0.w"]["data_offsets"] = [h["0.w"]["data_offsets"][0], h["0.w"]["data_offsets"][1] + 4096]
        return h

    _rewrite_header(path, shift)
    with pytest.raises(CheckpointError, match=r"c\.safetensors is not a readable safetensors checkpoint"):
        load_checkpoint(path)
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(
        CheckpointError, match=r"header claims 4,611,686,018,427,387,904 bytes, over the 100,000,000-byte limit"
    ):
        load_checkpoint(path)
    save_checkpoint(path, _params())

    def newer(h):
        meta = json.loads(h["__metadata__"]["tinyfn"])
        meta["format_version"] = 99
        h["__metadata__"]["tinyfn"] = json.dumps(meta)
        return h

    _rewrite_header(path, newer)
    with pytest.raises(CheckpointError, match="format version 99 was written by a newer tinyfn"):
        load_checkpoint(path)


def test_a_checkpoint_with_an_extra_parameter_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    params = _params()
    save_checkpoint(path, (*params, {"w": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected parameter '5\.w'"):
        load_checkpoint(path, like=params)


# ----------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--batch-size", "9000"], "--batch-size 9000 is larger than the 7,333 training images of embedded"),
        (["--val-fraction", "1"], r"--val-fraction must be in \[0, 1\), got 1.0"),
        (["--lr", "inf"], "--lr must be a positive number, got inf"),
        (["--momentum", "1.5"], r"--momentum must be in \[0, 1\), got 1.5"),
        (["--data", "/no/such/dir"], "data must be 'embedded', 'fashion-mnist' or an IDX directory"),
        (["--out", "{file}/run"], "Not a directory"),
        (["--devices", "0"], "--devices must be a positive integer, got 0"),
    ],
)
def test_cli_reports_impossible_values_in_one_line(tmp_path, flags, message):
    import re

    (tmp_path / "file").write_text("")
    flags = [f.replace("{file}", str(tmp_path / "file")) for f in flags]
    proc = subprocess.run(
        [sys.executable, "-m", "tinyfn", "train", "--quiet", *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unknown_flags_and_debug(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tinyfn", "train", "--learning-rate", "3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert (
        proc.returncode == 2
        and "unrecognized arguments: --learning-rate 3" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    for argv in (
        ["--debug", "train", "--epochs", "-1"],
        ["train", "--epochs", "-1", "--debug"],
    ):  # before or after the command
        proc = subprocess.run(
            [sys.executable, "-m", "tinyfn", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )
        assert (
            proc.returncode != 0
            and "Traceback" in proc.stderr
            and "ValueError: --epochs must be a positive integer" in proc.stderr
        ), argv


def test_cli_version():
    from tinyfn import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "tinyfn", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"tinyfn {__version__}"

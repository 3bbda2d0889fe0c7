"""Every stop is clean: Ctrl-C, SIGTERM and SIGHUP during denoising or during the write of a video leave
nothing behind (no temporary file or folder beside the target) and exit with the conventional code."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from t2vzero.stops import Stopped, stop_on_signals

CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".t2vzero-probe"))


def stop_generate(model_dir, out, signum, when):
    """Run `t2vzero generate` (64 frames) and send `signum` once `when` holds; returns (exit code, stderr)."""
    args = [sys.executable, "-m", "t2vzero", "generate", "a red circle", "--model", str(model_dir), "--frames", "64",
            "--steps", "2", "--size", "128x128", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "0"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err = bytearray()

    def read() -> None:
        for byte in iter(lambda: proc.stderr.read(1), b""):
            err.extend(byte)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not when(bytes(err)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before the signal: {bytes(err).decode()[-1500:]}"
    proc.send_signal(getattr(signal, signum))
    proc.wait(timeout=120)
    reader.join(timeout=10)
    return proc.returncode, bytes(err).decode()


def writing(folder):
    """True once a temporary output (a dot-name beside the target) exists: the write has begun."""
    return lambda _err: any(name.startswith(".") for name in leftovers(folder))


def denoising(err):
    return b"denoising" in err


@pytest.mark.parametrize("signum,target,phase", [
    ("SIGTERM", "out.mp4", "denoising"), ("SIGHUP", "out.mp4", "denoising"), ("SIGINT", "out.mp4", "denoising"),
    ("SIGTERM", "out.mp4", "writing"), ("SIGTERM", "out.gif", "writing"), ("SIGTERM", "frames/", "writing"),
    ("SIGHUP", "out.gif", "writing"), ("SIGINT", "frames/", "writing"),
])
def test_a_signal_leaves_nothing_behind(tiny_model_dir, tmp_path, signum, target, phase):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    when = denoising if phase == "denoising" else writing(out_dir)
    code, err = stop_generate(tiny_model_dir, out_dir / target, signum, when)
    assert code == CODES[signum], err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith("nothing was written"), err[-2000:]
    assert leftovers(out_dir) == []


def test_stop_on_signals_raises_once_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stopped.value.exit_code == 143 and stopped.value.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_that_lands_in_a_callback_still_stops():
    """Python drops an exception raised in a weak reference's callback (the import system's module locks use
    them, so a signal during a lazy import lands there): the stop must not be lost with it."""
    import weakref

    class Thing:
        pass

    def callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # bytecode: the handler runs here, inside the callback

    with pytest.raises(Stopped) as stopped, stop_on_signals():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        time.sleep(1)
    assert stopped.value.exit_code == 143 and ref() is None


def test_a_run_far_above_the_native_size_stops_within_seconds_of_ctrl_c(tmp_path):
    """At 1536x1536 the built-in model (native 64x64) attends over 36,864 latent tokens: one attention call alone
    would take most of a minute on this CPU. In query blocks, Ctrl-C is answered within a few seconds."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [sys.executable, "-m", "t2vzero", "generate", "a red circle on a blue background", "--size", "1536x1536",
            "--frames", "2", "-o", str(out_dir / "big.mp4")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "0"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err = bytearray()

    def read() -> None:
        for byte in iter(lambda: proc.stderr.read(1), b""):
            err.extend(byte)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 240
    while b"denoising" not in err and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(2.0)  # well inside the first UNet call
    assert proc.poll() is None, bytes(err).decode()[-1500:]
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    waited = time.monotonic() - sent
    assert proc.returncode == 130 and waited <= 5.0, (waited, bytes(err).decode()[-1500:])
    assert leftovers(out_dir) == []

"""The app for several users: requests at once each get their own result, a queue beyond the concurrency, and a
clean stop on SIGTERM or SIGHUP, idle or mid-generation."""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("gradio")
client_module = pytest.importorskip("gradio_client")

from t2vzero.video import read_video  # noqa: E402
from test_app import free_port  # noqa: E402


def start_app(tmp_path, *args):
    """The app in a subprocess with its own temporary folder root; returns (process, url)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "t2vzero", "app", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(480):
        if proc.poll() is not None:
            pytest.fail(f"app exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.25)
    proc.kill()
    pytest.fail("the app did not start")


def app_folders(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("t2vzero-app-"))


def inputs(client, **given):
    """`given`, and None (empty: "the model's") for every input of the text tab whose form field starts empty."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/text_to_video"]
    empty = {p["parameter_name"]: None for p in api["parameters"] if not p["parameter_has_default"]}
    return {**empty, **given}


def request(client, prompt, seed, frames=3):
    return client.submit(**inputs(client, model="built-in", prompt=prompt, frames=frames, seed=seed, steps=10),
                         api_name="/text_to_video")


def frames_of(result):
    video = result[0]
    while isinstance(video, dict):  # a component update, or Gradio's {"video": path} file data
        video = video.get("video", video.get("value"))
    return read_video(video)[0].astype(np.int16)


def test_three_requests_at_once_each_get_their_own_result(tmp_path):
    proc, url = start_app(tmp_path, "--concurrency", "2")
    try:
        client = client_module.Client(url, verbose=False)
        asks = [("a red circle on a blue background", 1), ("a green square on a white background", 2),
                ("a yellow triangle on a purple background", 3)]
        jobs = [request(client, prompt, seed) for prompt, seed in asks]
        ranks = []
        while not all(job.done() for job in jobs):  # the third waits in the queue, and says where
            ranks += [job.status().rank for job in jobs if job.status().code.name == "IN_QUEUE"]
            time.sleep(0.05)
        together = [frames_of(job.result()) for job in jobs]
        alone = [frames_of(request(client, prompt, seed).result()) for prompt, seed in asks]
        for a, b in zip(together, alone, strict=True):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1
        assert np.abs(together[0] - together[1]).max() > 20  # different requests, different videos
        assert any(rank is not None and rank >= 0 for rank in ranks), ranks
        assert proc.poll() is None  # the server stays up
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 143 and app_folders(tmp_path) == []


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_a_stop_mid_generation_is_clean(tmp_path, signum):
    proc, url = start_app(tmp_path)
    output = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)
    reader.start()
    assert len(app_folders(tmp_path)) == 1
    client = client_module.Client(url, verbose=False)
    job = request(client, "a red circle on a blue background", 5, frames=48)
    deadline = time.monotonic() + 120
    while job.status().code.name != "PROCESSING" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # inside the generation
    proc.send_signal(getattr(signal, signum))
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    log = b"".join(output).decode(errors="replace")
    assert code == 128 + getattr(signal, signum), log[-2000:]  # not 134: no abort
    assert "terminate called" not in log and f"stopped by {signum}" in log, log[-2000:]
    assert app_folders(tmp_path) == []


def test_fps_and_seed_are_checked_before_generating(tmp_path):
    proc, url = start_app(tmp_path)
    try:
        client = client_module.Client(url, verbose=False)
        started = time.monotonic()
        for kwargs, match in ((dict(fps=0), "fps must be"), (dict(seed=2**70), "seed must be")):
            with pytest.raises(Exception, match=match):
                client.predict(**inputs(client, model="built-in", prompt="a red circle", frames=64, steps=50, **kwargs),
                               api_name="/text_to_video")
        assert time.monotonic() - started < 30  # refused at once, not after 2 x 64 frames x 50 steps
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

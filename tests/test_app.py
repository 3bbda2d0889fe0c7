"""The web app in a real browser: headless Chromium (Debian's) driven by Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sdxl_48_dir(tmp_path_factory):
    """A tiny SDXL checkpoint whose native size (48x48) differs from the built-in model's 64x64."""
    from diffusers import StableDiffusionXLPipeline

    from t2vzero.tiny import make_tiny_sdxl_components

    parts = make_tiny_sdxl_components(seed=1, sample_size=6)
    parts.pop("force_zeros_for_empty_prompt")
    path = tmp_path_factory.mktemp("models") / "sdxl-48"
    StableDiffusionXLPipeline(**parts).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, sdxl_48_dir):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "t2vzero", "app", "--port", str(port), "--max-seconds", "5",
                             "--models", str(sdxl_48_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_path_factory.mktemp("app"))
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):  # bounded: at most about a minute
            if proc.poll() is not None:
                pytest.fail(f"app exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.set_default_timeout(180_000)
        page.goto(app_url)
        yield page
        browser.close()


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on `port`, read from the kernel's tables (IPv4 and IPv6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.append(address)
    return found


def test_binds_loopback_only(app_url):
    port = int(app_url.rstrip("/").rsplit(":", 1)[1])
    addresses = listening_addresses(port)
    assert addresses, f"nothing listens on port {port}"
    # 0100007F is 127.0.0.1 (little-endian hex); anything else (0.0.0.0, ::) would expose the app.
    assert all(a == "0100007F" for a in addresses), addresses


def test_text_to_video_with_the_built_in_model_shows_a_playable_video(page):
    page.locator("#t2v-prompt textarea").fill("a green square on a white background")
    page.locator("#t2v-generate").click()
    page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.duration > 0)")
    duration = page.evaluate("() => Math.max(...[...document.querySelectorAll('video')].map(v => v.duration || 0))")
    assert duration > 0
    # The player is sized to the 64x64 video (enlarged 4x, nearest), not blown up to the page's width.
    shown = page.evaluate("() => [...document.querySelectorAll('video')].filter(v => v.duration > 0)"
                          ".map(v => [v.videoWidth, v.getBoundingClientRect().width])[0]")
    page_width = page.evaluate("() => document.body.clientWidth")
    assert shown[0] == 64 and 64 <= shown[1] <= 300 < page_width / 2, (shown, page_width)


def test_an_sdxl_model_from_the_allow_list_generates_at_its_native_size(page, sdxl_48_dir):
    videos = "[...document.querySelectorAll('video')]"
    before = page.evaluate(f"() => {videos}.map(v => v.currentSrc)")
    page.locator("#t2v-model input").click()
    page.get_by_role("option", name=str(sdxl_48_dir)).click()
    page.locator("#t2v-prompt textarea").fill("a red circle")
    page.locator("#t2v-generate").click()
    page.wait_for_function(f"before => {videos}.some(v => v.duration > 0 && !before.includes(v.currentSrc))",
                           arg=before)
    size = page.evaluate(f"before => {videos}.filter(v => !before.includes(v.currentSrc))"
                         ".map(v => [v.videoWidth, v.videoHeight])[0]", before)
    assert size == [48, 48]  # the SDXL checkpoint's own size (its sample size x the VAE factor), not the built-in's
    page.locator("#t2v-model input").click()
    page.get_by_role("option", name="built-in").click()


def test_uploading_a_clip_to_the_edit_tab_gives_a_clear_error(page, tmp_path):
    from t2vzero.video import write_video

    clip = np.full((4, 64, 64, 3), 60, np.uint8)
    clip[:, 20:40, 20:40] = (220, 40, 40)
    path = write_video(clip, tmp_path / "clip.mp4", fps=4)
    page.get_by_role("tab", name="Edit by instruction").click()
    page.locator("#edit-upload input[type=file]").set_input_files(str(path))
    page.locator("#edit-instruction textarea").fill("make it blue")
    page.locator("#edit-generate").click()
    # The built-in model is a text-to-image model: the edit tab must say so, not crash.
    page.get_by_text("input channels", exact=False).first.wait_for()


def test_runner_enforces_allow_lists_and_limits(tmp_path, tiny_model_dir):
    from t2vzero.app import BUILT_IN, AppConfig, Runner
    from t2vzero.errors import UserError
    from t2vzero.video import write_video

    runner = Runner(AppConfig(models=[str(tiny_model_dir)], max_seconds=1.0, max_upload_mb=1), tmp_path)
    assert runner.choices() == [BUILT_IN, str(tiny_model_dir)]
    with pytest.raises(UserError, match="allow-list"):
        runner.pipe("/etc/some/other/model")
    with pytest.raises(UserError, match="allow-list"):
        runner.pipe(BUILT_IN, lora="/tmp/not-allowed.safetensors")
    with pytest.raises(UserError, match="allow-list"):
        runner.controlnet("lllyasviel/sd-controlnet-canny")
    clip = write_video(np.zeros((16, 32, 32, 3), np.uint8), tmp_path / "clip.mp4", fps=8)  # 2 s
    with pytest.raises(UserError, match="longer than"):
        runner.clip(str(clip), 1, None, 32)
    frames, fps = runner.clip(str(clip), 2, None, 32, start=0.5, end=1.0)
    assert len(frames) == 2 and fps == pytest.approx(4.0)
    assert runner.clip(str(clip), 1, 4, 32, fps=10.0)[1] == 10.0


def test_image_to_video_tab_animates_an_uploaded_image(page, tmp_path):
    from PIL import Image

    image = np.full((64, 64, 3), (40, 80, 220), np.uint8)
    image[20:44, 16:40] = (220, 40, 40)
    Image.fromarray(image).save(tmp_path / "square.png")
    page.get_by_role("tab", name="Image → video").click()
    page.locator("#i2v-image input[type=file]").set_input_files(str(tmp_path / "square.png"))
    page.locator("#i2v-prompt textarea").fill("a red square on a blue background")
    page.locator("#i2v-generate").click()
    page.wait_for_function("() => (document.querySelector('#i2v-video video') || {}).duration > 0")


def test_restyle_tab_restyles_an_uploaded_clip(page, tmp_path):
    from clips import moving_square
    from t2vzero.video import write_video

    clip = moving_square(4, 64, 64, top=20, side=20, left=8, step=6, colour=(220, 40, 40), ground=240)
    path = write_video(clip, tmp_path / "clip.mp4", fps=4)
    page.get_by_role("tab", name="Restyle video").click()
    tab = page.locator("#restyle-tab")
    tab.locator("#restyle-upload input[type=file]").set_input_files(str(path))
    tab.locator("#restyle-prompt textarea").fill("a blue square on a white background")
    tab.locator("#restyle-invert input[type=checkbox]").check()  # from each frame's inversion
    tab.get_by_text("advanced").click()
    resolution = tab.get_by_label("resolution (longer side)")
    resolution.fill("64")
    resolution.press("Tab")
    tab.locator("#restyle-generate").click()
    page.wait_for_function("() => (document.querySelector('#restyle-video video') || {}).duration > 0")


def test_camera_path_picker_presets_files_and_contradictions(tmp_path):
    import json

    from t2vzero.app import CAMERA_PRESETS, DELTA, MODELS_OWN, AppConfig, Runner
    from t2vzero.errors import UserError
    from t2vzero.motion import Pan, Rotate, Zoom

    runner = Runner(AppConfig(max_upload_mb=1), tmp_path)
    assert runner.camera_path(MODELS_OWN, 1.0, None, 8.0, 8.0, False) is None  # the model's own
    assert runner.camera_path(DELTA, 1.0, None, 8.0, -4.0, False) == (8.0, -4.0)
    with pytest.raises(UserError, match="needs both"):
        runner.camera_path(DELTA, 1.0, None, None, -4.0, False)
    assert runner.camera_path("zoom in", 2.0, None, None, None, False) == Zoom(1.06)
    assert runner.camera_path("rotate clockwise", 1.0, None, None, None, False) == Rotate(-3.0)
    assert runner.camera_path("pan right", 0.0, None, None, None, False) == Pan(0.0, 0.0)
    assert all(runner.camera_path(p, 4.0, None, None, None, False) for p in CAMERA_PRESETS)  # every preset parses
    keys = tmp_path / "path.json"
    keys.write_text(json.dumps([{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
                                {"frame": 3, "dx": 24, "dy": 0, "zoom": 1.1, "rotate": 0}]))
    assert runner.camera_path(MODELS_OWN, 1.0, str(keys), None, None, False).keys[1].zoom == 1.1
    with pytest.raises(UserError, match="contradict"):
        runner.camera_path("zoom in", 1.0, None, None, None, True)
    assert runner.camera_path(DELTA, 1.0, None, 8.0, 8.0, True) == (0.0, 0.0)
    keys.write_text("[1, 2]")
    with pytest.raises(UserError, match="exactly the fields"):
        runner.camera_path(DELTA, 1.0, str(keys), None, None, False)
    keys.write_bytes(b" " * (2**20 + 1))
    with pytest.raises(UserError, match="larger than this server's limit"):
        runner.camera_path(DELTA, 1.0, str(keys), None, None, False)


def test_text_to_video_follows_a_chosen_camera_path_and_shows_file_errors(page, tmp_path):
    import json

    page.get_by_role("tab", name="Text → video").click()
    page.locator("#t2v-prompt textarea").fill("a blue square on a yellow background")
    page.get_by_text("advanced").first.click()
    page.locator("#t2v-camera-path input").click()
    page.get_by_role("option", name="zoom in", exact=True).click()
    before = page.evaluate("() => [...document.querySelectorAll('video')].map(v => v.src).join(' ')")
    page.locator("#t2v-generate").click()
    page.wait_for_function("(before) => [...document.querySelectorAll('video')].some(v => v.duration > 0 && "
                           "!before.includes(v.src))", arg=before)
    bad = tmp_path / "path.json"
    bad.write_text(json.dumps([{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
                               {"frame": 5, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
                               {"frame": 2, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0}]))
    page.locator("#t2v-camera-file input[type=file]").set_input_files(str(bad))
    page.locator("#t2v-generate").click()
    page.get_by_text("out of order", exact=False).first.wait_for()

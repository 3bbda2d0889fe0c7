"""Video files round-trip: frame count, size, fps; outputs appear whole or not at all."""

import os

import numpy as np
import pytest

from t2vzero.errors import UserError
from t2vzero.video import check_output_path, contact_sheet, read_video, sheet_path, write_video


def moving_square(frames=6, h=48, w=64):
    video = np.full((frames, h, w, 3), 30, np.uint8)
    for i in range(frames):
        video[i, 10:26, 4 + 6 * i: 20 + 6 * i] = (220, 40, 40)
    return video


@pytest.mark.parametrize("suffix,fps,tolerance", [(".mp4", 4.0, 12), (".webm", 8.0, 16), (".gif", 5.0, 8)])
def test_video_files_round_trip(tmp_path, suffix, fps, tolerance):
    video = moving_square()
    path = write_video(video, tmp_path / f"out{suffix}", fps=fps)
    frames, read_fps = read_video(path)
    assert frames.shape == video.shape
    assert read_fps == pytest.approx(fps, rel=0.02)
    assert np.abs(frames.astype(int) - video).mean() < tolerance
    assert os.listdir(tmp_path) == [f"out{suffix}"]  # no temp file left behind


def test_mp4_is_h264_yuv420p(tmp_path):
    import subprocess

    import imageio_ffmpeg

    path = write_video(moving_square(), tmp_path / "v.mp4", fps=4)
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe


def test_png_folder_is_lossless_and_numbered(tmp_path):
    video = moving_square(frames=12)
    out = write_video(video, tmp_path / "frames/", fps=4)
    names = sorted(os.listdir(out))
    assert names[0] == "0000.png" and len(names) == 12
    frames, fps = read_video(out)
    assert fps is None and np.array_equal(frames, video)


def test_contact_sheet_tiles_rows_of_frames(tmp_path):
    from PIL import Image

    video = moving_square(frames=5)
    path = contact_sheet([video, video[::-1]], tmp_path / "sheet.png", max_columns=4)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (48 * 4, 64 * 4, 3)  # two rows of frames, each wrapped onto two lines
    assert np.array_equal(sheet[:48, :64], video[0])
    assert sheet_path("out/video.mp4").name == "video_sheet.png"
    assert sheet_path("frames/").name == "frames_sheet.png"


@pytest.mark.parametrize("name,match", [("video.avi", "unknown output format"),
                                        ("missing/video.mp4", "does not exist")])
def test_bad_output_paths(tmp_path, name, match):
    with pytest.raises(UserError, match=match):
        check_output_path(tmp_path / name)


def test_non_empty_frame_folder_is_not_overwritten(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        write_video(moving_square(), tmp_path / "frames", fps=4)
    assert (tmp_path / "frames" / "keep.txt").read_text() == "mine"


def test_a_failed_encode_leaves_the_previous_video_in_place(tmp_path, monkeypatch):
    import imageio_ffmpeg

    good = write_video(moving_square(), tmp_path / "v.mp4", fps=4)
    before = good.read_bytes()

    def broken_writer(path, *args, **kwargs):  # what ffmpeg does when it fails: exits, leaving 0 bytes
        open(path, "wb").close()
        while True:
            yield

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken_writer)
    with pytest.raises(UserError, match="could not encode"):
        write_video(moving_square(), good, fps=4)
    assert good.read_bytes() == before and os.listdir(tmp_path) == ["v.mp4"]
    with pytest.raises(UserError, match="fps"):
        write_video(moving_square(), tmp_path / "w.gif", fps=float("inf"))


def test_unreadable_inputs_are_user_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(UserError, match="not a readable video"):
        read_video(bad)
    with pytest.raises(UserError, match="does not exist"):
        read_video(tmp_path / "nope.mp4")
    frames = write_video(moving_square(), tmp_path / "frames/", fps=4)
    (frames / "0001.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="not a readable image"):
        read_video(frames)


def test_outputs_get_ordinary_permissions_not_private_temp_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        video = write_video(moving_square(), tmp_path / "v.mp4", fps=4)
        folder = write_video(moving_square(), tmp_path / "frames/", fps=4)
        sheet = contact_sheet([moving_square()], tmp_path / "s.png")
    finally:
        os.umask(umask)
    assert oct(video.stat().st_mode & 0o777) == oct(0o644) == oct(sheet.stat().st_mode & 0o777)
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)


def test_contact_sheet_enlarges_small_frames_nearest(tmp_path):
    from PIL import Image

    video = moving_square(frames=3)  # 48 x 64 frames
    sheet = np.asarray(Image.open(contact_sheet([video], tmp_path / "big.png", min_side=128)))
    assert sheet.shape == (48 * 3, 64 * 3 * 3, 3)  # a whole factor of 3 makes the shorter side 144 >= 128
    assert np.array_equal(sheet[:144, :192], video[0].repeat(3, axis=0).repeat(3, axis=1))
    same = np.asarray(Image.open(contact_sheet([video], tmp_path / "same.png", min_side=48)))
    assert same.shape == (48, 64 * 3, 3)


def test_frames_and_images_are_read_as_a_viewer_shows_them(tmp_path):
    """Frame folders numbered without padding (ffmpeg's %d.png) keep their order; 16-bit greyscale is scaled,
    not clipped to white; an EXIF orientation (phone photos) is applied, to the size read from the header too."""
    from PIL import Image

    from t2vzero.inputs import clip_shape, read_image
    from t2vzero.modes.image2video import check_image

    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(1, 12):
        Image.fromarray(np.full((16, 24, 3), 20 * i, np.uint8)).save(plain / f"{i}.png")
    frames, _ = read_video(plain)
    assert [int(f[0, 0, 0]) // 20 for f in frames] == list(range(1, 12))

    wide = tmp_path / "wide"
    wide.mkdir()
    for i, value in enumerate((0, 30000, 65535)):
        Image.fromarray(np.full((16, 24), value, np.uint16)).save(wide / f"{i:03d}.png")
    frames, _ = read_video(wide)
    assert [int(f[0, 0, 0]) for f in frames] == [0, round(30000 / 257), 255] and frames.shape[-1] == 3
    gradient = tmp_path / "g16.png"
    Image.fromarray(np.linspace(0, 65535, 16 * 24).reshape(16, 24).astype(np.uint16)).save(gradient)
    assert abs(read_image(gradient).mean() - 127.5) < 1

    turned = tmp_path / "turned"
    turned.mkdir()
    photo = np.zeros((16, 24, 3), np.uint8)
    photo[:, :4] = 255  # a white left edge: stored landscape, shown portrait with the edge on top (orientation 6)
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(turned / "0.png", exif=exif.tobytes())
    shown = read_image(turned / "0.png")
    assert shown.shape == (24, 16, 3) and shown[:2].mean() > 200 and shown[-2:].mean() < 50
    assert clip_shape(turned)[1] == (16, 24) and read_video(turned)[0].shape == (1, 24, 16, 3)
    with Image.open(turned / "0.png") as pil:  # the API's PIL input too
        assert np.array_equal(check_image(pil, 8), shown)


def test_a_variable_rate_clip_is_read_one_frame_per_frame_at_its_average_rate(tmp_path):
    """ffmpeg's raw output is constant-rate by default: a clip whose frames last 0.1 s and 0.4 s in turn came
    out with duplicates, which then played at the average rate, too slowly."""
    import subprocess

    import imageio_ffmpeg
    from PIL import Image

    durations = [0.1, 0.4] * 4
    lines = []
    for i, d in enumerate(durations):
        Image.fromarray(np.full((48, 64, 3), 25 * i, np.uint8)).save(tmp_path / f"{i}.png")
        lines += [f"file '{tmp_path / f'{i}.png'}'", f"duration {d}"]
    lines.append(f"file '{tmp_path / f'{len(durations) - 1}.png'}'")  # the concat demuxer's last-entry rule
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    clip = tmp_path / "vfr.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "concat", "-safe", "0", "-i",
                    str(tmp_path / "list.txt"), "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(clip)], check=True)
    frames, fps = read_video(clip)
    levels = [round(float(f.mean()) / 25) for f in frames]
    assert levels[: len(durations)] == list(range(len(durations)))  # each frame once, in order: no duplicates
    assert abs(len(frames) / fps - sum(durations)) < 0.5  # plays as long as the clip

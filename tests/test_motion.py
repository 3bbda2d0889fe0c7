"""Motion field, camera paths and latent warping (paper §3.3.1), tested without any model."""

import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t2vzero.errors import UserError
from t2vzero.motion import (
    GRAMMAR,
    AffineFunction,
    Combined,
    Flow,
    Key,
    Keyframes,
    Pan,
    Rotate,
    Zoom,
    as_motion,
    check_motion,
    is_translation,
    latent_shifts,
    latent_sources,
    load_motion_file,
    motion_field,
    parse_keyframes,
    parse_motion,
    reference_offsets,
    reference_warp_latents,
    reference_warp_offsets,
    translate_latents,
    warp_latents,
)


def test_motion_field_is_linear_in_frame_index_and_scales_with_size():
    field = motion_field([0, 1, 2, 5], (12.0, -6.0), (512, 512))
    assert torch.equal(field[0], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(field[1], torch.tensor([12.0, -6.0], dtype=torch.float64))
    assert torch.allclose(field[3], 5 * field[1])
    # Non-square: the same fraction of the frame on each axis as at 512².
    wide = motion_field([3], (12.0, 12.0), (768, 256))
    assert torch.allclose(wide[0] / torch.tensor([768.0, 256.0], dtype=torch.float64),
                          torch.full((2,), 36 / 512, dtype=torch.float64))


def test_translate_moves_content_left_and_up_for_positive_shift():
    latents = torch.zeros(1, 4, 16, 16)
    latents[0, :, 8, 8] = 1.0  # a single bright latent pixel
    out = translate_latents(latents, torch.tensor([[3.0, 2.0]]))
    ys, xs = torch.nonzero(out[0, 0], as_tuple=True)
    assert (ys.tolist(), xs.tolist()) == ([6], [5])


def test_translate_rounds_half_up_and_mirrors_at_the_border():
    row = torch.arange(6.0).view(1, 1, 1, 6)
    out = translate_latents(row, torch.tensor([[1.5, 0.0]]))  # rounds to 2 whole pixels
    assert out.flatten().tolist() == [2.0, 3.0, 4.0, 5.0, 5.0, 4.0]
    back = translate_latents(row, torch.tensor([[-2.0, 0.0]]))
    assert back.flatten().tolist() == [1.0, 0.0, 0.0, 1.0, 2.0, 3.0]


@settings(max_examples=30, deadline=None)
@given(dx=st.integers(-5, 5), dy=st.integers(-5, 5))
def test_translate_is_an_exact_shift_inside_the_frame(dx, dy):
    latents = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(dx * 11 + dy))
    out = translate_latents(latents, torch.tensor([[float(dx), float(dy)]]))
    ys, xs = slice(max(0, -dy), 12 - max(0, dy)), slice(max(0, -dx), 12 - max(0, dx))
    src_ys, src_xs = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    assert torch.equal(out[..., ys, xs], latents[..., src_ys, src_xs])
    # A whole-pixel warp keeps the latent's values: nothing is blended.
    assert set(out.flatten().tolist()) <= set(latents.flatten().tolist())


def test_default_warp_matches_the_reference_warp_on_whole_pixel_shifts():
    # At 512 px (64 latent px), δ = 8 moves one latent pixel per frame: both warps must agree.
    latents = torch.randn(3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    frame_ids = [1, 2, 3]
    ours = translate_latents(latents, motion_field(frame_ids, (8.0, 16.0), (64, 64)))
    ref = reference_warp_latents(latents, frame_ids, (8.0, 16.0))
    assert torch.equal(ours, ref)


# --- Camera paths (issue 16): values, specs, files, warps ---

def numbered(frames=1, h=8, w=8):
    """Latents whose every value says where it came from: value = 100·y + x (+ 10000·frame)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    one = (100 * ys + xs)[None, None].expand(frames, 2, h, w).clone()
    return one + 10000 * torch.arange(frames, dtype=torch.float64)[:, None, None, None]


def source_of(value):
    """(x, y) latent pixel a `numbered` value came from."""
    v = int(value) % 10000
    return v % 100, v // 100


def shifted_pan_path(frame):
    """A module-level motion function (picklable): the pan (64, -64) on a 512 grid at 64 px, as a sampling map."""
    return [[1, 0, 8.0 * frame], [0, 1, -8.0 * frame]]


@pytest.mark.parametrize("spec,expected", [
    ("12,12", Pan(12.0, 12.0)),
    (" -4.5 , 1e1 ", Pan(-4.5, 10.0)),
    ("pan:4,0", Pan(4.0, 0.0)),
    ("PAN: 4, -1e+1", Pan(4.0, -10.0)),
    ("zoom:1.03", Zoom(1.03)),
    ("rotate:-5", Rotate(-5.0)),
    ("zoom:1.02+pan:4,0", Combined((Zoom(1.02), Pan(4.0, 0.0)))),
    ("rotate:2 + zoom:0.98 + pan:-1,+2", Combined((Rotate(2.0), Zoom(0.98), Pan(-1.0, 2.0)))),
])
def test_parse_motion_reads_the_grammar(spec, expected):
    assert parse_motion(spec) == expected
    assert as_motion(spec) == expected


@pytest.mark.parametrize("spec,part", [
    ("1;2", "'1;2'"), ("", "empty"), ("zoom:1.02+", "empty"), ("pan:4", "'pan:4'"), ("zoom:big", "'zoom:big'"),
    ("zoom:1.02+4,0", "'4,0'"), ("spin:3", "'spin:3'"), ("rotate:1,2", "'rotate:1,2'"), ("pan:nan,0", "finite"),
    ("1e400,0", "finite"), ("zoom:0", "must be > 0"), ("zoom:1.1+shake:2", "'shake:2'"),
])
def test_bad_specs_name_the_failing_part_and_show_the_grammar(spec, part):
    with pytest.raises(UserError) as err:
        parse_motion(spec)
    message = str(err.value)
    assert part in message and "\n" not in message, message
    assert GRAMMAR in message or "zoom is a scale" in message


def test_as_motion_takes_pairs_specs_motions_arrays_and_functions():
    assert as_motion((12, 12)) == Pan(12.0, 12.0) and as_motion([16, 0]) == Pan(16.0, 0.0)
    assert as_motion(Zoom(1.1)) == Zoom(1.1)
    assert isinstance(as_motion(np.zeros((3, 2, 64, 64))), Flow)
    assert as_motion(shifted_pan_path) == AffineFunction(shifted_pan_path)
    for bad, match in ((3.0, "motion must be"), ((float("nan"), 0), "motion dx must be a finite"),
                       (("a", 1), "motion dx must be a number"), (None, "motion must be")):
        with pytest.raises(UserError, match=match):
            as_motion(bad)


def test_motions_pickle_and_compare_by_value():
    path = Combined((Zoom(1.02), Rotate(3.0), Pan(4.0, 0.0), AffineFunction(shifted_pan_path),
                     parse_keyframes([{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
                                      {"frame": 3, "dx": 8, "dy": 0, "zoom": 1.2, "rotate": 9}])))
    assert pickle.loads(pickle.dumps(path)) == path
    flow = as_motion(np.ones((2, 2, 16, 16), np.float32))
    assert np.array_equal(pickle.loads(pickle.dumps(flow)).flow, flow.flow)
    assert path != Combined((Zoom(1.02),)) and hash(Pan(1, 2)) == hash(Pan(1.0, 2.0))


def test_sampling_maps_follow_the_documented_conventions():
    size = (64, 32)
    assert np.allclose(Pan(16, 32).sampling_map(3, size), [[1, 0, 6.0], [0, 1, 6.0]])  # δ·k·size/512
    z = Zoom(2.0).sampling_map(1, size)  # p -> c + (p - c)/2 about the centre (32, 16)
    assert np.allclose(z @ [32, 16, 1], [32, 16]) and np.allclose(z @ [64, 32, 1], [48, 24])
    r = Rotate(90.0).sampling_map(1, (64, 64))
    # Content turns counter-clockwise on screen: the pixel above the centre shows what was to its right.
    assert np.allclose(r @ [32, 22, 1], [42, 32])
    both = Combined((Zoom(2.0), Pan(512.0, 0.0)))
    zoom_then_pan = Zoom(2.0).matrix(1, (64, 64)) @ Pan(512, 0).matrix(1, (64, 64))  # sampling maps compose reversed
    assert np.allclose(both.sampling_map(1, (64, 64)), zoom_then_pan[:2])
    for motion in (Pan(5, 5), Zoom(1.5), Rotate(30), both):
        assert np.allclose(motion.sampling_map(0, size), np.eye(3)[:2])  # frame 1 never moves


def test_a_pan_warps_exactly_as_the_whole_pixel_shift():
    latents = torch.randn(5, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    ids, size = [1, 2, 3, 5, 7], (96, 64)
    for delta in ((12.0, 12.0), (-30.0, 8.0), (16.0, 0.0)):
        expected = translate_latents(latents, latent_shifts(ids, delta, size, (12, 8)))
        assert torch.equal(warp_latents(latents, delta, ids, size), expected)
        assert torch.equal(warp_latents(latents, f"pan:{delta[0]},{delta[1]}", ids, size), expected)
    # Pure translations of any other kind take the same whole-pixel path.
    as_keys = parse_keyframes([{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
                               {"frame": 8, "dx": 512, "dy": -512, "zoom": 1, "rotate": 0}])
    expected = translate_latents(latents, latent_shifts(ids, (64.0, -64.0), size, (12, 8)))
    assert torch.equal(warp_latents(latents, as_keys, ids, size), expected)
    assert torch.equal(warp_latents(latents, AffineFunction(lambda k: [[1, 0, 12.0 * k], [0, 1, -8.0 * k]]), ids,
                                    size), expected)
    assert not torch.equal(warp_latents(latents, (64.0, -56.0), ids, size), expected)  # the check can fail


def test_zoom_in_by_two_repeats_each_central_latent_pixel_two_by_two():
    out = warp_latents(numbered(), Zoom(2.0), [1], (64, 64))[0, 0]
    for y in range(8):
        for x in range(8):
            assert source_of(out[y, x]) == (2 + x // 2, 2 + y // 2)


def test_rotation_by_a_quarter_turn_is_rot90_counter_clockwise():
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    turned = warp_latents(latents, Rotate(90.0), [1], (64, 64))
    assert torch.equal(turned, torch.rot90(latents, 1, (-2, -1)))
    assert not torch.equal(turned, torch.rot90(latents, -1, (-2, -1)))
    # The warp goes by frame id: frame 2 is a half turn.
    assert torch.equal(warp_latents(latents, Rotate(90.0), [2], (64, 64)), torch.rot90(latents, 2, (-2, -1)))


def test_zoom_out_fills_the_border_by_mirroring():
    out = warp_latents(numbered(), Zoom(0.5), [1], (64, 64))[0, 0]
    # Output column x samples 4 + 2·(x + 0.5 − 4) = 2x − 3.0: x = 0 falls at −3.0, mirrored to column 2.
    mirror = {-3: 2, -1: 0, 1: 1, 3: 3, 5: 5, 7: 7, 9: 6, 11: 4}
    cols = [source_of(v)[0] for v in out[4]]
    assert cols == [mirror[2 * x - 3] for x in range(8)]


def test_nearest_warps_keep_the_noise_statistics():
    noise = torch.randn(3, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    for motion in (Rotate(17.0), Zoom(0.93), Combined((Zoom(1.01), Rotate(-4.0), Pan(40.0, 8.0)))):
        warped = warp_latents(noise, motion, [1, 2, 3], (512, 512))
        assert set(warped[0, 0].flatten().tolist()) <= set(noise[0, 0].flatten().tolist())  # no blended values
        assert abs(float(warped.std()) - float(noise.std())) < 0.03
        assert not torch.equal(warped, noise)


def test_keyframes_interpolate_linearly_zoom_geometrically_and_hold_after_the_last():
    path = parse_keyframes([{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
                            {"frame": 4, "dx": 40, "dy": -8, "zoom": 4, "rotate": 20},
                            {"frame": 6, "dx": 40, "dy": 32, "zoom": 4, "rotate": 20}])
    mid = path.state(2)
    assert (mid.dx, mid.dy, mid.rotate) == (20.0, -4.0, 10.0) and mid.zoom == pytest.approx(2.0)
    assert path.state(5).dy == pytest.approx(12.0) and path.state(9) == path.keys[-1]
    # A keyframed zoom of 4 over four frames is zoom:√2 per frame.
    assert np.allclose(path.sampling_map(2, (64, 64)),
                       Combined((Zoom(2 ** 0.5), Rotate(5.0), Pan(10.0, -2.0))).sampling_map(2, (64, 64)))
    # Frame k moves by the change from frame 0's state.
    offset = parse_keyframes([{"frame": 0, "dx": 100, "dy": 0, "zoom": 2, "rotate": 0},
                              {"frame": 1, "dx": 116, "dy": 0, "zoom": 2, "rotate": 0}])
    assert np.allclose(offset.sampling_map(0, (64, 64)), np.eye(3)[:2])
    assert np.allclose(offset.sampling_map(1, (64, 64)), Pan(16.0, 0.0).sampling_map(1, (64, 64)))


KEY = {"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0}


@pytest.mark.parametrize("data,match", [
    ([{**KEY, "frame": 0}, {**KEY, "frame": 5}, {**KEY, "frame": 3}], "out of order: frame 3"),
    ([{**KEY, "frame": 0}, {**KEY, "frame": 2}, {**KEY, "frame": 2}], "out of order: frame 2"),
    ([{**KEY, "frame": -1}], "out of range"),
    ([{**KEY, "frame": 1.5}], "out of range"),
    ([{**KEY, "frame": 2}], "first keyframe must be frame 0"),
    ([{"frame": 0, "dx": 0, "dy": 0, "zoom": 1}], "exactly the fields frame, dx, dy, zoom, rotate"),
    ([{**KEY, "spin": 3}], "exactly the fields"),
    ([{**KEY, "zoom": 0}], "zoom is 0; it is a total scale"),
    ([{**KEY, "zoom": 1e-320}], "must be from 0.0001 to 10000"), ([{**KEY, "zoom": 1e5}], "must be from 0.0001"),
    ([{**KEY, "dx": 10 ** 400}], "dx must be a finite number, got an integer of 401 digits"),
    ([{**KEY, "dx": "left"}], "dx must be a number"),
    ([{**KEY, "rotate": float("nan")}], "rotate must be a finite"),
    ([], "non-empty JSON list"), ({"frame": 0}, "non-empty JSON list"), ([3], "exactly the fields"),
])
def test_bad_keyframes_are_one_line_errors(tmp_path, data, match):
    path = tmp_path / "path.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=match) as err:
        load_motion_file(path)
    assert "\n" not in str(err.value)


def test_keyframes_beyond_the_video_are_out_of_range(tmp_path):
    path = tmp_path / "path.json"
    path.write_text(json.dumps([KEY, {**KEY, "frame": 9, "dx": 64}]))
    motion = load_motion_file(path)
    check_motion(motion, 10)
    with pytest.raises(UserError, match=r"frame 9 is out of range: the video's frames are 0\.\.7"):
        check_motion(motion, 8)


def test_flow_files_load_resample_to_the_latent_grid_and_are_checked(tmp_path):
    flow = np.zeros((3, 2, 64, 64), np.float32)
    flow[:, 0] = 8.0 * np.arange(1, 4)[:, None, None]  # frame k samples 8·k output px to the right
    np.save(tmp_path / "flow.npy", flow)
    motion = load_motion_file(tmp_path / "flow.npy")
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    expected = translate_latents(latents, torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    assert torch.equal(warp_latents(latents, motion, [1, 2, 3], (64, 64)), expected)
    # Each latent pixel takes the mean flow of its 8×8 footprint: half its pixels at 16 px is 1 latent px.
    half = np.zeros((1, 2, 64, 64), np.float32)
    half[0, 0, :, ::2] = 16.0
    out = warp_latents(numbered(), half, [1], (64, 64))[0, 0]
    assert [source_of(v)[0] for v in out[0]] == [1, 2, 3, 4, 5, 6, 7, 7]
    check_motion(motion, 4, (64, 64))
    for frames, size, match in ((5, (64, 64), "needs 4"), (4, (128, 64), "the flow is 64x64")):
        with pytest.raises(UserError, match=match):
            check_motion(motion, frames, size)


@pytest.mark.parametrize("array,match", [
    (np.zeros((3, 3, 8, 8)), "shape"), (np.zeros((2, 8, 8)), "shape"), (np.zeros((0, 2, 8, 8)), "shape"),
    (np.full((1, 2, 8, 8), np.nan), "NaN"), (np.array([[[["a"]], [["b"]]]]), "not real numbers"),
    (np.full((1, 2, 8, 8), 1e300), "beyond float32's range"),  # finite in float64, infinite once stored as float32
])
def test_bad_flow_files_are_one_line_errors(tmp_path, array, match):
    np.save(tmp_path / "flow.npy", array)
    with pytest.raises(UserError, match=match):
        load_motion_file(tmp_path / "flow.npy")


def test_unreadable_or_unknown_motion_files(tmp_path):
    (tmp_path / "p.json").write_text("[{")
    (tmp_path / "p.npy").write_bytes(b"not numpy")
    (tmp_path / "p.txt").write_text("zoom:1.1")
    for name, match in (("p.json", "not valid JSON"), ("p.npy", "not a readable .npy"), ("p.txt", ".json keyframes"),
                        ("missing.json", "does not exist")):
        with pytest.raises(UserError, match=match):
            load_motion_file(tmp_path / name)


def test_motion_functions_are_checked_and_translations_recognised():
    assert is_translation(AffineFunction(shifted_pan_path), range(4), (64, 64))
    assert not is_translation(Zoom(1.01), range(4), (64, 64)) and is_translation(Zoom(1.0), range(4), (64, 64))
    assert not is_translation(as_motion(np.zeros((3, 2, 8, 8))), range(4), (64, 64))
    for fn, match in ((lambda k: [[1, 0]], "shape"), (lambda k: [[1, 0, float("inf")], [0, 1, 0]], "finite"),
                      (lambda k: "left", "not a 2x3 matrix")):
        with pytest.raises(UserError, match=match):
            check_motion(AffineFunction(fn), 3)


def test_compat_warp_of_a_keyframed_translation_is_the_reference_warp_of_its_offsets():
    latents = torch.randn(3, 4, 64, 64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(reference_warp_offsets(latents, [(8.0, 16.0), (16.0, 32.0), (24.0, 48.0)]),
                       reference_warp_latents(latents, [1, 2, 3], (8.0, 16.0)))
    keys = Keyframes((Key(0), Key(3, dx=24.0, dy=48.0)))
    assert np.allclose(reference_offsets(keys, [1, 2, 3], (512, 512)), [(8, 16), (16, 32), (24, 48)])


@pytest.mark.parametrize("motion", [Pan(40.0, -24.0), Zoom(1.3), Rotate(25.0), "zoom:0.9+pan:8,8",
                                    np.random.default_rng(0).normal(0, 6, (3, 2, 64, 64))])
def test_latent_sources_are_where_the_warp_samples(motion):
    latents = numbered(3)
    warped = warp_latents(latents, motion, [1, 2, 3], (64, 64))
    xs, ys = latent_sources(motion, [1, 2, 3], (64, 64), (8, 8))
    mirror = {i: (i % 16 if i % 16 < 8 else 15 - i % 16) for i in range(-32, 40)}
    for f in range(3):
        for y in range(8):
            for x in range(8):
                sx, sy = mirror[int(np.floor(xs[f, y, x]))], mirror[int(np.floor(ys[f, y, x]))]
                assert source_of(warped[f, 0, y, x]) == (sx, sy)


def test_a_path_writes_itself_back_in_the_grammar():
    from t2vzero.motion import Keyframes, parse_motion

    for spec in ("pan:12,-4", "zoom:1.03", "rotate:-2.5", "zoom:1.02+pan:4,0+rotate:3"):
        assert parse_motion(spec).spec == spec and parse_motion(parse_motion(spec).spec) == parse_motion(spec)
    assert parse_motion("12,12").spec == "pan:12,12"
    for path in (Zoom(1.0000001), Rotate(1 / 3), Pan(1e-9, -123456.789)):  # exactly, not to 6 digits
        assert parse_motion(path.spec) == path
    assert Keyframes(()).spec == "keyframes"


def test_paths_too_extreme_to_compute_are_refused_and_strong_but_sane_ones_are_not():
    # A zoom's total scale is bounded (x10^4 either way), not its rate: 1.03 over 300 frames is x7098.
    check_motion(Zoom(1.03), 300, (64, 64))
    cases = ((Zoom(1e300), 40, "beyond x10000 either way"), (Zoom(1e-300), 3, "beyond x10000"),
             (Zoom(3.0), 40, r"3\^39 over 40 frames"), (Zoom(-1.0), 3, "finite scale per frame > 0"),
             (as_motion("zoom:1.02+pan:1e308,1e308"), 3, "overflows by frame 1"),
             (AffineFunction(lambda k: [[1e308, 0, 0], [0, 1, 0]]), 3, None))
    for motion, frames, match in cases:
        if match is None:  # finite maps of any size are the function's own business: taken as they are
            check_motion(motion, frames, (64, 64))
            continue
        with pytest.raises(UserError, match=match) as err:
            check_motion(motion, frames, (64, 64))
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="integer of 401 digits"):
        as_motion((10 ** 400, 0))
    # What the check lets through warps to finite latents without warnings (the refused ones gave inf/NaN maps).
    with np.errstate(all="raise"):
        out = warp_latents(torch.randn(40, 4, 8, 8), Zoom(1.26), list(range(40)), (64, 64))
    assert torch.isfinite(out).all()

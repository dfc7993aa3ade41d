"""Optical flow, backward warping and Ruder et al.'s consistency weights (nst_utils.flow) on a synthetic translation:
a textured random image whose content moves by (dx, dy) = (3, -2) pixels from one frame to the next."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nst_utils.config import NSTError

cv2 = pytest.importorskip("cv2", reason="the video extra is not installed (pip install -e '.[video]')")
flow = pytest.importorskip("nst_utils.flow")

DX, DY = 3, -2  # the content moves 3 px right and 2 px up: cur[y, x] = prev[y - DY, x - DX]
H, W = 96, 128
INTERIOR = (slice(8, -8), slice(8, -8))  # away from the strips that enter the picture and from the edges


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """Return (previous, current) frames: windows of one smooth random texture, the second moved by (DX, DY)."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.random((H + 20, W + 20, 3)).astype(np.float32), (0, 0), 1.5)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    prev = texture[10 : 10 + H, 10 : 10 + W]
    cur = texture[10 - DY : 10 - DY + H, 10 - DX : 10 - DX + W]
    assert np.array_equal(cur[20, 30], prev[20 - DY, 30 - DX])  # the motion as stated
    return prev, cur


def constant(dx: float, dy: float) -> np.ndarray:
    """Return an HxWx2 flow that is (dx, dy) everywhere."""
    return np.broadcast_to(np.array([dx, dy], np.float32), (H, W, 2)).copy()


@pytest.mark.parametrize("preset", flow.PRESETS)
def test_flow_recovers_the_translation_in_both_directions(pair, preset):
    prev, cur = pair
    forward = flow.optical_flow(prev, cur, preset)  # prev[y, x] ~ cur[y + dy, x + dx]
    backward = flow.optical_flow(cur, prev, preset)  # cur[y, x] ~ prev[y + dy, x + dx]
    assert forward.shape == backward.shape == (H, W, 2) and forward.dtype == np.float32
    worst = {"ultrafast": 0.75, "fast": 0.5, "medium": 0.15}[preset]  # ultrafast has no variational refinement
    for found, true in ((forward, [DX, DY]), (backward, [-DX, -DY])):
        error = np.abs(found[INTERIOR] - true)
        assert error.max() < worst and np.percentile(error, 99) < 0.5 and error.mean() < 0.1


def test_warp_by_the_backward_flow_gives_the_current_frame(pair):
    prev, cur = pair
    exact = flow.warp(prev, constant(-DX, -DY))  # out[y, x] = prev[y - DY, x - DX]: whole pixels, no interpolation
    np.testing.assert_array_equal(exact[: H + DY, DX:], cur[: H + DY, DX:])  # all but the strips that entered
    backward, _ = flow.flow_for(prev, cur)
    warped = flow.warp(prev, backward)
    assert warped.shape == cur.shape and warped.dtype == np.float32
    assert np.abs(warped[INTERIOR] - cur[INTERIOR]).max() < 0.05
    assert np.abs(prev[INTERIOR] - cur[INTERIOR]).mean() > 10 * np.abs(warped[INTERIOR] - cur[INTERIOR]).mean()


def test_bicubic_warp_stays_in_the_pictures_range():
    """A black-white edge moved by half a pixel: bicubic overshoots below 0 and above 1 next to it, warp clips."""
    edge = np.zeros((H, W, 3), np.float32)
    edge[:, W // 2 :] = 1.0
    half = constant(0.5, 0.0)
    raw = flow._sample(edge, half, "cubic")
    assert raw.min() < -0.01 and raw.max() > 1.01  # what the clip is for
    warped = flow.warp(edge, half)
    assert warped.min() == 0.0 and warped.max() == 1.0
    np.testing.assert_allclose(warped[:, W // 2 - 1], 0.5, atol=1e-6)  # the edge itself, halfway
    assert flow.warp(edge, constant(0.0, 0.0)).tobytes() == edge.tobytes()  # no motion: the picture unchanged


def test_weights_zero_the_strips_that_enter_the_picture(pair):
    prev, cur = pair
    backward, weights = flow.flow_for(prev, cur)
    assert weights.shape == (H, W) and weights.dtype == np.float32
    assert set(np.unique(weights)) <= {0.0, 1.0}
    assert weights[:, :DX].max() == 0  # columns that came in on the left (content moved right)
    assert weights[H + DY :, :].max() == 0  # rows that came in at the bottom (content moved up)
    assert weights[INTERIOR].mean() > 0.98
    assert weights.mean() > 0.9


def test_weights_of_exact_flows_are_the_pixels_seen_in_both_frames():
    weights = flow.consistency_weights(constant(DX, DY), constant(-DX, -DY))
    seen = np.zeros((H, W), np.float32)
    seen[: H + DY, DX:] = 1
    np.testing.assert_array_equal(weights, seen)


@pytest.mark.parametrize(("error", "kept"), [(0.8, True), (1.0, False)])
def test_disocclusion_threshold_is_ruders(error, kept):
    """|w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5: here 0.64 < 0.718 (kept) and 1.0 > 0.71 (marked)."""
    weights = flow.consistency_weights(constant(DX, DY), constant(-DX + error, -DY))
    assert weights[INTERIOR].min() == weights[INTERIOR].max() == float(kept)


def test_motion_boundary_is_marked():
    backward = constant(-DX, -DY)
    backward[:, W // 2 :] = [1.0, 0.0]  # two regions moving differently: a motion edge down the middle
    forward = -backward  # consistent everywhere, so only the boundary test can mark a pixel
    weights = flow.consistency_weights(forward, backward)
    assert weights[10:-10, W // 2 - 1 : W // 2 + 1].max() == 0  # the central differences either side of the edge
    assert weights[10:-10, 20 : W // 2 - 4].min() == 1 and weights[10:-10, W // 2 + 4 : -4].min() == 1


def test_warping_error_is_zero_for_a_warped_pair_and_large_for_unrelated_frames(pair):
    prev, cur = pair
    exact, seen = constant(-DX, -DY), flow.consistency_weights(constant(DX, DY), constant(-DX, -DY))
    assert flow.warping_error(prev, cur, exact, seen) < 1e-12
    backward, weights = flow.flow_for(prev, cur)
    small = flow.warping_error(prev, cur, backward, weights)
    unrelated = np.random.default_rng(1).random(cur.shape).astype(np.float32)
    large = flow.warping_error(prev, unrelated, backward, weights)
    assert small < 1e-4 and large > 0.05 and large > 1000 * small
    assert np.isnan(flow.warping_error(prev, cur, backward, np.zeros_like(weights)))


def test_bad_inputs_are_one_line_errors(pair, monkeypatch):
    prev, cur = pair
    with pytest.raises(NSTError, match="preset 'slow'"):
        flow.optical_flow(prev, cur, "slow")
    with pytest.raises(NSTError, match="same size"):
        flow.optical_flow(prev, cur[:50])
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    flow._dis.cache_clear()
    with pytest.raises(NSTError) as err:
        flow.optical_flow(prev, cur, "fast")
    flow._dis.cache_clear()
    assert "pip install 'nst-utils[video]'" in str(err.value) and "\n" not in str(err.value)


def test_the_base_import_loads_no_video_library():
    """`import nst_utils` loads none of the video modules; the CLI takes flow.PRESETS for --flow's choices, and flow
    imports OpenCV only when a function needs it, so the CLI still loads no video library."""
    code = (
        "import sys, nst_utils\n"
        "video = ('cv2', 'imageio', 'imageio_ffmpeg')\n"
        "loaded = [m for m in (*video, 'nst_utils.flow', 'nst_utils.frames', 'nst_utils.video') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import nst_utils.cli\n"
        "loaded = [m for m in (*video, 'nst_utils.frames', 'nst_utils.video') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

"""Video: the temporal term of the Objective (its value and gradient), and `stylize_video` / `nst video` on a
generated clip (a camera panning 2 px per frame over japanese_garden.jpg): frames in = frames out at the input's frame
rate, folder and video inputs, interrupt and resume, the three modes, the command end to end and its errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from nst_utils.config import CONTENT_LAYERS, STYLE_LAYERS, NSTError, StyleConfig

pytest.importorskip("cv2", reason="the video extra is not installed (pip install -e '.[video]')")
pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed (pip install -e '.[video]')")

from conftest import synthetic_image  # noqa: E402

from nst_utils import objective as obj_mod  # noqa: E402
from nst_utils import video  # noqa: E402
from nst_utils.flow import flow_for, warp, warping_error  # noqa: E402
from nst_utils.frames import frame_path, read_frames, write_frames  # noqa: E402
from nst_utils.images import as_image  # noqa: E402

STYLE = "picasso_selfportrait.jpg"
SMALL = dict(size=48, steps=3, frame_steps=2, progress=False)  # a few evaluations per frame at 48 px


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """Return 4 frames (long side 64) of a camera panning 2 px per frame over japanese_garden.jpg."""
    return video.camera_clip("japanese_garden.jpg", frames=4, size=64, pan=2.0)


@pytest.fixture
def clip_dir(tmp_path, clip):
    """Return a folder of the clip's 4 frames."""
    return write_frames(clip, tmp_path / "clip", 24)


# --- the temporal term -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def temporal_objective(extractor):
    """Return an Objective whose only term is the temporal one (alpha = beta = tv = 0), aimed at 24x32 images."""
    obj = obj_mod.Objective(extractor, CONTENT_LAYERS, STYLE_LAYERS, alpha=0.0, beta=0.0, tv=0.0)
    obj.set_content(synthetic_image(24, 32, 1)[None])
    obj.set_style([synthetic_image(24, 32, 2)[None]])
    return obj


def test_temporal_term_is_ruders_loss_with_its_gradient(temporal_objective):
    import tensorflow as tf

    obj = temporal_objective
    rng = np.random.default_rng(0)
    x = rng.random((24, 32, 3)).astype(np.float32)
    warped = rng.random((24, 32, 3)).astype(np.float32)
    c = (rng.random((24, 32)) > 0.3).astype(np.float32)
    c[5:9, :] = 0.0  # an occluded band
    weight = 24 * 32 * 3 / 10.0
    obj.set_temporal(warped, c, weight)
    terms, grad = obj.value_and_grad(tf.constant(x[None]))
    expected = weight * np.mean(c[..., None] * (x - warped) ** 2)  # (1/D) sum_k c_k (x_k - w_k)^2, D = H W C
    np.testing.assert_allclose(terms["temporal"].numpy(), [expected], rtol=1e-5)
    np.testing.assert_allclose(terms["total"].numpy(), terms["temporal"].numpy(), rtol=1e-6)
    grad = grad.numpy()[0]
    assert np.all(grad[5:9] == 0.0) and np.all(grad[c == 0] == 0.0)  # no pull where c = 0
    assert np.abs(grad[c == 1]).min() > 0
    h = 0.25  # the term is quadratic in x: the central difference is exact for any step, up to float32 rounding
    for y, xx, ch in [(0, 0, 0), (3, 17, 1), (12, 30, 2), (20, 5, 0), (6, 10, 1)]:  # (6, 10): inside the band
        plus, minus = x.copy(), x.copy()
        plus[y, xx, ch] += h
        minus[y, xx, ch] -= h
        f = [float(obj.loss_terms(tf.constant(v[None]))["total"][0]) for v in (plus, minus)]
        np.testing.assert_allclose((f[0] - f[1]) / (2 * h), grad[y, xx, ch], rtol=1e-3, atol=1e-5)


def test_aim_clears_the_temporal_term_for_an_image_of_any_size(temporal_objective):
    import tensorflow as tf

    from nst_utils import StyleConfig

    obj = temporal_objective
    obj.set_temporal(np.zeros((24, 32, 3), np.float32), np.ones((24, 32), np.float32), 5.0)
    obj.aim(StyleConfig(alpha=1.0, beta=0.0, tv=0.0), synthetic_image(40, 56, 3), [synthetic_image(40, 56, 4)])
    terms = obj.loss_terms(tf.constant(synthetic_image(40, 56, 3)[None]))  # another size: no stale target
    assert float(terms["temporal"][0]) == 0.0 and float(obj.temporal.numpy()) == 0.0
    with pytest.raises(NSTError, match="HxWx3"):
        obj.set_temporal(np.zeros((24, 32, 3)), np.ones((20, 32)))


def test_the_tiled_evaluation_has_the_same_temporal_term():
    import tensorflow as tf

    from nst_utils.objective import build_objective
    from nst_utils.tiling import TiledObjective

    shallow = {"content_layers": ("block3_conv2",), "style_layers": ("block1_conv1", "block2_conv1")}  # 16-px halo
    config = StyleConfig(size=76, precision="float32", **shallow)
    untiled = build_objective(config, synthetic_image(60, 76, 1), [synthetic_image(48, 48, 2)])
    tiled = TiledObjective(untiled, 32)
    assert tiled.tiles(60, 76) > 1
    c = np.ones((60, 76), np.float32)
    c[:, :20] = 0.0
    untiled.set_temporal(synthetic_image(60, 76, 3), c, 1e11)  # a temporal term as large as the others
    image = tf.constant(synthetic_image(60, 76, 4)[None])
    (terms, grad), (tiled_terms, tiled_grad) = untiled.value_and_grad(image), tiled.value_and_grad(image)
    assert float(terms["temporal"][0]) > 0.1 * float(terms["total"][0])
    for name in ("temporal", "total"):
        np.testing.assert_allclose(tiled_terms[name].numpy(), terms[name].numpy(), rtol=1e-4)
    np.testing.assert_allclose(tiled_grad.numpy(), grad.numpy(), rtol=1e-4, atol=1e-5 * np.abs(grad.numpy()).max())


def test_old_checkpoint_without_temporal_history_resumes(tmp_path):
    from nst_utils import checkpoint, stylize

    def stop(step, image, terms):
        if step >= 3:
            raise KeyboardInterrupt

    out = tmp_path / "r.png"
    first = stylize(synthetic_image(), synthetic_image(seed=5), size=48, steps=60, output=out, callback=stop)
    n = first.steps
    assert first.interrupted and n < 60 and first.history["temporal"] == [0.0] * n
    ckpt_path = checkpoint.checkpoint_path(out)
    with np.load(ckpt_path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["history"]["temporal"]  # as a checkpoint written before the temporal term existed
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    ckpt_path.write_bytes(buf.getvalue())
    assert checkpoint.load(ckpt_path).history["temporal"] == [0.0] * n
    resumed = stylize(resume=ckpt_path, steps=n + 3, progress=False)
    assert resumed.steps == n + 3 and resumed.history["temporal"] == [0.0] * (n + 3)
    assert resumed.history["total"][:n] == first.history["total"]


# --- stylize_video -------------------------------------------------------------------------------------------------


def test_folder_in_folder_out_and_the_modes(tmp_path, clip_dir):
    full = video.stylize_video(clip_dir, STYLE, tmp_path / "full", **SMALL)
    out, fps = read_frames(tmp_path / "full", fps=24)
    assert len(out) == 4 and out.shape == (26, 48) and full.frames == 4 and not full.interrupted
    assert full.mode == "full" and full.temporal == video.default_temporal(StyleConfig(size=48))
    assert full.evaluations == [3, 2, 2, 2]  # frame 1: steps; later frames: frame_steps from the warped start
    assert all(s.flow_seconds > 0 for s in full.stats[1:]) and np.isnan(full.stats[0].warping_error)
    assert np.isfinite(full.mean_warping_error)
    assert (tmp_path / "full" / video.SETTINGS_FILE).is_file()

    alone = video.stylize_video(clip_dir, STYLE, None, independent=True, **SMALL)
    assert alone.mode == "independent" and alone.evaluations == [3, 3, 3, 3] and len(alone.images) == 4
    from nst_utils import stylize

    frame3 = as_image(read_frames(clip_dir)[0][2], 48)
    single = stylize(frame3, STYLE, size=48, steps=3, progress=False)  # independent = each frame as stylize does
    np.testing.assert_allclose(alone.images[2], single.image, atol=1.0 / 255 + 1e-6)

    warm = video.stylize_video(clip_dir, STYLE, None, temporal=0.0, **SMALL)
    assert warm.mode == "warm" and warm.temporal == 0.0 and warm.evaluations == [3, 2, 2, 2]


def test_the_temporal_term_pulls_each_frame_towards_the_warped_previous_one(clip_dir):
    warm = video.stylize_video(clip_dir, STYLE, None, temporal=0.0, **SMALL | dict(frame_steps=6))
    pulled = video.stylize_video(clip_dir, STYLE, None, temporal=1e12, **SMALL | dict(frame_steps=6))
    assert pulled.mean_warping_error < 0.5 * warm.mean_warping_error
    frames = [as_image(f, 48) for f in read_frames(clip_dir)[0]]
    backward, c = flow_for(frames[0], frames[1])
    measured = warping_error(pulled.images[0], pulled.images[1], backward, c)
    assert measured == pytest.approx(pulled.stats[1].warping_error)
    assert warp(pulled.images[0], backward).shape == pulled.images[1].shape


def test_video_file_in_video_file_out_keeps_the_frame_rate(tmp_path, clip):
    source = write_frames(clip, tmp_path / "clip.mp4", 12.5)
    result = video.stylize_video(source, STYLE, tmp_path / "out.mp4", **SMALL)
    frames, fps = read_frames(tmp_path / "out.mp4")
    assert len(frames) == 4 and fps == pytest.approx(12.5) and result.fps == pytest.approx(12.5)
    assert frames.shape == (26, 48)  # the frames at --size 48
    assert not video.work_folder(tmp_path / "out.mp4").exists()  # the work folder goes once the video is written


def test_interrupted_run_keeps_its_frames_and_the_same_call_continues(tmp_path, clip_dir):
    out = tmp_path / "out.gif"
    work = video.work_folder(out)

    def stop_after_second(index, image):
        if index == 1:
            raise KeyboardInterrupt

    cut = video.stylize_video(clip_dir, STYLE, out, frame_callback=stop_after_second, **SMALL)
    assert cut.interrupted and cut.frames == 2 and "run the same command again" in cut.message
    assert frame_path(work, 1).is_file() and not frame_path(work, 2).exists() and not out.exists()
    with pytest.raises(NSTError, match="temporal"):  # another command does not mix its frames in
        video.stylize_video(clip_dir, STYLE, out, temporal=0.0, **SMALL)
    done = video.stylize_video(clip_dir, STYLE, out, **SMALL)
    assert done.resumed == 2 and [s.index for s in done.stats] == [2, 3] and done.frames == 4
    frames, _ = read_frames(out)
    assert len(frames) == 4
    whole = video.stylize_video(clip_dir, STYLE, tmp_path / "whole", **SMALL)  # the same run, never interrupted
    again = [whole.stats[i].warping_error for i in (2, 3)]
    np.testing.assert_allclose([s.warping_error for s in done.stats], again, rtol=1e-6)


def test_bad_outputs_and_inputs_are_refused(tmp_path, clip_dir):
    with pytest.raises(NSTError, match="same file"):
        video.stylize_video(clip_dir, STYLE, clip_dir, **SMALL)
    with pytest.raises(NSTError, match="image name"):
        video.stylize_video(clip_dir, STYLE, tmp_path / "out.png", **SMALL)
    with pytest.raises(NSTError, match="does not exist"):
        video.stylize_video(tmp_path / "nothing", STYLE, tmp_path / "o", **SMALL)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(NSTError, match="not empty"):
        video.stylize_video(clip_dir, STYLE, tmp_path / "busy", **SMALL)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(NSTError, match="preset"):
        video.stylize_video(clip_dir, STYLE, None, flow_preset="slow", **SMALL)
    with pytest.raises(NSTError, match="temporal"):
        video.stylize_video(clip_dir, STYLE, None, temporal=-1.0, **SMALL)


# --- nst video ---------------------------------------------------------------------------------------------------


def nst(*args):
    return subprocess.run([sys.executable, "-m", "nst_utils", *args], capture_output=True, text=True, timeout=600)


def test_cli_video_end_to_end(tmp_path, clip_dir):
    out = tmp_path / "styled.mp4"
    r = nst("video", str(clip_dir), STYLE, "-o", str(out), "--size", "48", "--steps", "3", "--frame-steps", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "4 frames" in r.stdout and "warping error" in r.stdout and r.stderr == ""
    frames, fps = read_frames(out)
    assert len(frames) == 4 and fps == pytest.approx(24)
    alone = tmp_path / "alone"
    r = nst("video", str(clip_dir), "-o", str(alone), "--size", "48", "--steps", "2", "--independent", "-q")
    assert r.returncode == 0, r.stderr
    assert len(read_frames(alone)[0]) == 4


def test_cli_video_errors_are_one_line(tmp_path, clip_dir):
    r = nst("video", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4"), "--size", "48")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "missing.mp4" in r.stderr, r.stderr
    r = nst("video", str(clip_dir), "-o", str(clip_dir), "--size", "48")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "same file" in r.stderr, r.stderr
    r = nst("video", str(clip_dir), "-o", str(tmp_path / "o"), "--flow", "slow")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    blocked = (
        "import sys; sys.modules['cv2'] = None; from nst_utils.cli import main; "
        f"sys.exit(main(['video', {str(clip_dir)!r}, '-o', {str(tmp_path / 'o')!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nst-utils[video]" in r.stderr, r.stderr


def test_cli_video_refuses_a_folder_that_belongs_to_another_command(tmp_path, clip_dir):
    cells = tmp_path / "cells"  # as `nst sweep --save-dir cells` leaves it: images, no video run's settings
    cells.mkdir()
    (cells / "r0_c0.png").write_bytes(b"a sweep's cell")
    r = nst("video", str(clip_dir), "-o", str(cells), "--size", "48", "--steps", "2", "-q")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not empty" in r.stderr, r.stderr
    assert [p.name for p in cells.iterdir()] == ["r0_c0.png"]
    assert (cells / "r0_c0.png").read_bytes() == b"a sweep's cell"  # nothing written, nothing removed

    done = tmp_path / "done"
    command = ("video", str(clip_dir), "-o", str(done), "--size", "48", "--steps", "2", "--frame-steps", "1", "-q")
    assert nst(*command).returncode == 0
    written = {p.name: p.read_bytes() for p in done.glob("frame_*.png")}
    assert len(written) == 4
    r = nst(*command)  # a finished folder: nothing to compute again
    assert r.returncode == 0 and "4 frames" in r.stdout and "(4 already done)" in r.stdout, r.stdout + r.stderr
    r = nst(*command, "--independent")  # another command's frames are not mixed in
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "holds the frames of another run" in r.stderr
    assert "mode" in r.stderr
    assert {p.name: p.read_bytes() for p in done.glob("frame_*.png")} == written

"""Reading and writing video frames (nst_utils.frames): folders and video files in and out with the frame count, the
frame rate and the size kept, natural order of names, one-line errors, and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from nst_utils.config import NSTError
from nst_utils.outputs import save_image

pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed (pip install -e '.[video]')")
frames = pytest.importorskip("nst_utils.frames")

H, W = 48, 64


def clip(count: int = 10, height: int = H, width: int = W) -> list[np.ndarray]:
    """Return `count` smooth RGB frames of a pattern drifting right (video codecs keep such content closely)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return [
        np.stack([0.5 + 0.35 * np.sin((xs - 2 * k) / 6 + c) * np.cos(ys / 9 - c) for c in (0.0, 1.0, 2.0)], -1)
        for k in range(count)
    ]


def test_folder_in_natural_order_and_folder_out(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for n in (10, 2, 1):  # written out of order; listed by name frame_1, frame_10, frame_2 by a plain sort
        save_image(np.full((H, W, 3), n / 10, np.float32), src / f"frame_{n}.png")
    (src / "notes.txt").write_text("not a frame")
    (src / ".frame_3.png.tmp").write_bytes(b"a temp file")
    got, fps = frames.read_frames(src, fps=12)
    assert fps == 12.0 and len(got) == 3 and got.shape == (H, W)
    assert [round(float(f.mean()) * 10) for f in got] == [1, 2, 10]  # frame_2 before frame_10
    out = frames.write_frames(got, tmp_path / "out", fps)
    assert sorted(p.name for p in out.iterdir()) == ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    back, _ = frames.read_frames(out)
    for a, b in zip(got, back, strict=True):
        np.testing.assert_allclose(a, b, atol=0.5 / 255)


@pytest.mark.parametrize(("name", "fps", "atol"), [("clip.mp4", 24.0, 0.04), ("clip.mp4", 29.97, 0.04)])
def test_mp4_round_trip_keeps_count_rate_and_size(tmp_path, name, fps, atol):
    made = clip(12)
    target = frames.write_frames(iter(made), tmp_path / name, fps)  # a generator: written as it comes
    got, got_fps = frames.read_frames(target)
    assert len(got) == 12 and got_fps == fps and got.shape == (H, W)
    assert frames.video_fps(target) == fps
    assert max(float(np.abs(a - b).mean()) for a, b in zip(made, got, strict=True)) < atol
    again = frames.write_frames(got, tmp_path / "again.mp4", got_fps)  # a video in, a video out
    back, back_fps = frames.read_frames(again)
    assert (len(back), back_fps, back.shape) == (12, fps, (H, W))


def test_webm_round_trip(tmp_path):
    got, fps = frames.read_frames(frames.write_frames(clip(6), tmp_path / "clip.webm", 15))
    assert (len(got), fps, got.shape) == (6, 15.0, (H, W))


def test_odd_sizes_are_padded_by_one_pixel_in_mp4(tmp_path):
    made = clip(4, height=H + 1, width=W + 1)
    got, _ = frames.read_frames(frames.write_frames(made, tmp_path / "odd.mp4", 24))
    assert len(got) == 4 and got.shape == (H + 2, W + 2)  # padded, not cropped
    assert float(np.abs(got[1][: H + 1, : W + 1] - made[1]).mean()) < 0.04
    np.testing.assert_allclose(got[1][-1], got[1][-2], atol=0.06)  # the repeated last row


def test_gif_round_trip_keeps_count_and_rate(tmp_path):
    made = clip(8)
    made[5] = made[6] = made[4]  # identical frames stay frames (Pillow's GIF writer would merge them)
    got, fps = frames.read_frames(frames.write_frames(made, tmp_path / "clip.gif", 20))
    assert (len(got), fps, got.shape) == (8, 20.0, (H, W))
    assert float(np.abs(got[2] - made[2]).mean()) < 0.03
    _, fps24 = frames.read_frames(frames.write_frames(made, tmp_path / "clip24.gif", 24))
    assert abs(8 / fps24 - 8 / 24) <= 0.01  # the clip's length to within one 10 ms tick


def test_frames_index_and_slice(tmp_path):
    got, _ = frames.read_frames(frames.write_frames(clip(5), tmp_path / "f", 24))
    assert isinstance(got[-1], np.ndarray) and got[-1].dtype == np.float32
    assert len(got[1:4]) == 3 and np.array_equal(got[1:4][0], got[1])
    assert frames.frame_path(tmp_path / "f", 0).name == "frame_00001.png"


def test_read_errors_are_one_line(tmp_path):
    def fails(source, match):
        with pytest.raises(NSTError, match=match) as err:
            frames.read_frames(source)
        assert "\n" not in str(err.value)

    fails(tmp_path / "missing", "does not exist")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "has no frames")
    mixed = tmp_path / "mixed"
    save_image(np.zeros((H, W, 3)), mixed / "a1.png")
    save_image(np.zeros((H, W + 2, 3)), mixed / "a2.png")
    fails(mixed, r"differ in size: .*a2.png is 66x48")
    broken = tmp_path / "broken"
    save_image(np.zeros((H, W, 3)), broken / "a1.png")
    (broken / "a2.png").write_bytes(b"not a png")
    fails(broken, "cannot read frame .*a2.png")
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 10)
    fails(tmp_path / "bad.mp4", "cannot read video .*bad.mp4")
    (tmp_path / "bad.gif").write_bytes(b"GIF89a garbage")
    fails(tmp_path / "bad.gif", "cannot read video .*bad.gif")
    (tmp_path / "zero.mp4").write_bytes(b"")
    fails(tmp_path / "zero.mp4", "empty")
    (tmp_path / "clip.txt").write_text("x")
    fails(tmp_path / "clip.txt", "not a folder of frames or a video file")
    with pytest.raises(NSTError, match="frame rate"):
        frames.read_frames(tmp_path / "bad.mp4", fps=0)


def test_write_errors_are_one_line(tmp_path):
    for target, match in (("out.png", "image name"), ("out.avi", "read but not written"), ("out.mp4", "no frames")):
        with pytest.raises(NSTError, match=match):
            frames.write_frames([], tmp_path / target, 24)
    with pytest.raises(NSTError, match="frame 3 is 64x40, not 64x48"):
        frames.write_frames([*clip(2), clip(1, height=40)[0]], tmp_path / "sizes.mp4", 24)
    assert not (tmp_path / "sizes.mp4").exists()


def test_a_failed_write_leaves_the_existing_video_whole(tmp_path):
    target = tmp_path / "clip.mp4"
    frames.write_frames(clip(5), target, 24)
    before = target.read_bytes()

    def stream():
        yield from clip(3)
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        frames.write_frames(stream(), target, 24)
    bad = clip(3)
    bad[2] = np.full_like(bad[2], np.nan)  # a diverged frame
    with pytest.raises(NSTError, match="NaN"):
        frames.write_frames(bad, target, 24)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    frames.write_frames(clip(7), target, 24)  # a finished write replaces it
    assert len(frames.read_frames(target)[0]) == 7 and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]

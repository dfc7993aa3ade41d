"""Part 8 (video) runs top to bottom at tiny sizes: its inline checks against nst_utils pass (the warp, the
consistency weights, the warping error, the temporal loss and its gradient), and it shows its figures, its table of
the three modes and its animation, read here from the executed notebook's outputs."""

import base64
import io
import re

import pytest
from nbrun import outputs_text, run_notebook
from PIL import Image
from test_notebooks_transfer import _figures

pytest.importorskip("cv2", reason="part 8 needs the video extra: pip install 'nst-utils[video]'")
pytest.importorskip("imageio_ffmpeg", reason="part 8 needs the video extra: pip install 'nst-utils[video]'")

FRAMES, STEPS, FRAME_STEPS = 4, 30, 20  # enough evaluations for the temporal loss to add to the warm start


def _number(pattern: str, text: str) -> list[float]:
    """Return the groups of the first match of `pattern` in `text` as floats (fail if it is not there)."""
    match = re.search(pattern, text, re.M)
    assert match, pattern
    return [float(g) for g in match.groups()]


def test_08_video(tmp_path):
    nb = run_notebook("08_video", tmp_path, SIZE=64, FRAMES=FRAMES, STEPS=STEPS, FRAME_STEPS=FRAME_STEPS)
    text = outputs_text(nb)
    width, height = map(int, _number(rf"^{FRAMES} frames of (\d+) x (\d+) px in ", text))
    assert width == 64 and 0 < height < width  # the long side is SIZE; japanese_garden.jpg is wide

    # Step 3: the flow follows the camera (PAN = 3 px right per frame), and warping along it explains the frame but
    # for the strip that enters at the right
    (dx,) = _number(r"backward flow: mean dx (\S+) px", text)
    assert 2 < dx < 4
    before, after, edge, rest = _number(
        r"mean \|frame i - frame i-1\| = (\S+); after the warp (\S+): (\S+) in the \d+ rightmost columns, (\S+) "
        r"elsewhere",
        text,
    )
    assert after < before / 3 and edge > 2 * rest
    share, columns = _number(
        r"my_consistency equals nst_utils.flow.consistency_weights: c = 0 on (\S+)% of the pixels, the (\d+) "
        r"rightmost columns entirely",
        text,
    )  # printed after the NumPy check equalled the package's
    assert columns >= 2 and share >= 100 * columns / width - 1e-6
    mine, package, photos = _number(
        r"E_\d+: (\S+) for the independent outputs \(the package: (\S+)\); (\S+) for the photos themselves", text
    )
    assert mine == package and photos < mine / 10  # the photos warp onto each other; the outputs' strokes do not
    (zeros,) = _number(r"the same as nst_utils; gradient 0 on all (\d+) pixels with c = 0", text)
    assert zeros >= columns * height  # the temporal term leaves the entering strip alone

    # Step 5: the table of the three modes, the full method well below the independent frames' warping error
    rows = re.findall(r"^(independent|warm start only|full method) +(\S+) +(\S+) +(\d+)$", text, re.M)
    table = {name: (float(error), float(ratio), int(evaluations)) for name, error, ratio, evaluations in rows}
    assert list(table) == ["independent", "warm start only", "full method"], rows
    independent, warm, full = table.values()
    assert independent[1] == 1.0 and abs(full[1] - full[0] / independent[0]) < 0.01
    assert full[0] < independent[0] / 3 and full[0] < warm[0]  # the temporal loss adds to the warm start
    assert independent[2] == FRAMES * STEPS
    assert warm[2] <= STEPS + (FRAMES - 1) * FRAME_STEPS and full[2] <= STEPS + (FRAMES - 1) * FRAME_STEPS

    # the animation: one GIF frame per clip frame, the three clips side by side with 4 px gaps
    gifs = [
        base64.b64decode(o["data"]["image/gif"])
        for c in nb.cells
        for o in c.get("outputs", [])
        if "image/gif" in o.get("data", {})
    ]
    assert len(gifs) == 1
    with Image.open(io.BytesIO(gifs[0])) as gif:
        assert gif.n_frames == FRAMES and gif.size == (3 * width + 8, height)
    assert re.search(rf"three_modes\.gif: {FRAMES} frames at 4 fps", text)
    _figures(nb, 9)  # the clip, Step 2's strip and curve, the flow, c, the gradient, Step 5's strip, maps and curves

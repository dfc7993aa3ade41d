"""The video benchmark's CI-sized path (`python -m nst_utils.bench_video --quick`): its table, its JSON line and the
method's point on the quick clips (the full method's warping error below independent frames'). No timing asserts."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("cv2", reason="the video extra is not installed (pip install -e '.[video]')")

from nst_utils import bench_video  # noqa: E402


def test_quick_benchmark_prints_the_modes_side_by_side(capsys):
    assert bench_video.main(["--quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(out[-1])
    q = bench_video.QUICK
    budget, first = q["budget"], q["first_steps"]
    same = [(mode, budget, budget) for mode in bench_video.MODES]
    expected = [("garden", *r) for r in same + [("independent", first, first), ("full", first, budget)]]
    expected += [("tubingen", *r) for r in same]
    assert [(r["clip"], r["mode"], r["first_steps"], r["later_steps"]) for r in rows] == expected
    assert out[0] == bench_video.HEADER
    table = out[1 : 1 + len(rows)]
    assert [line.split()[:3] for line in table] == [
        [r["clip"], r["mode"], f"{r['first_evals']}/{r['later_evals']:.0f}"] for r in rows
    ]
    for r in rows:
        assert r["first_evals"] == r["first_steps"] and r["later_evals"] == r["later_steps"]  # the budget was spent
        assert math.isfinite(r["warping_error"]) and r["warping_error"] > 0 and r["sharpness"] > 0
        assert r["first_s"] > 0 and r["later_s"] > 0 and 0 < r["flow_share"] < 1
    by = {(r["clip"], r["mode"], r["first_steps"], r["later_steps"]): r for r in rows}
    for clip in ("garden", "tubingen"):
        alone, full = by[(clip, "independent", budget, budget)], by[(clip, "full", budget, budget)]
        assert alone["ratio"] == 1.0
        assert full["warping_error"] < alone["warping_error"]  # the method's point, at the same budget
        assert full["ratio"] == pytest.approx(full["warping_error"] / alone["warping_error"])
    defaults = by[("garden", "full", first, budget)]
    assert defaults["ratio"] == pytest.approx(
        defaults["warping_error"] / by[("garden", "independent", first, first)]["warping_error"]
    )
    summary = out[1 + len(rows) : -1]
    assert sum("full / independent warping error" in s for s in summary) == 2
    assert any(s.startswith(f"garden, defaults {first}/{budget}: a later frame") for s in summary)

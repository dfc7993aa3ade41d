"""Coarse-to-fine as a control: `--scales` / `scales=` bounds, one trace across the scales and the run, and a resumed
run refusing a changed schedule."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import nst_in_process as _cli

from nst_utils import NSTError, StyleConfig, cli, stylize
from nst_utils.run import plan, run


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--scales", "128", "64"], "ascending"),
        (["--scales", "512"], "below size 512"),
        (["--scales", "8"], "from 16 px"),
        (["--scales", "0"], "must be > 0"),
        (["--scales", "none", "128"], "none"),
        (["--scale-steps", "0"], "must be > 0"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(capsys, flags, needle):
    code, err = _cli(capsys, "stylize", "--size", "512", *flags, "-q", "-o", "never.png")
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_the_flags_reach_the_config():
    args = cli.build_parser().parse_args(["stylize", "--scales", "128", "256", "--scale-steps", "30"])
    assert args.settings["scales"] == (128, 256) and args.settings["scale_steps"] == 30
    none = cli.build_parser().parse_args(["stylize", "--scales", "none"])
    assert StyleConfig(**{k: none.settings[k] for k in ("scales", "size")}).scales == ()
    assert StyleConfig().scales == ()  # single scale is the default


def test_one_trace_across_the_scales_and_the_run(content_image, style_image):
    p = plan(content_image, style_image, StyleConfig(size=64, steps=6, scales=(24, 40), scale_steps=4))
    first = p.objective.loss_terms(p.x0[None])["total"].numpy()
    result = run(p, progress=False)
    assert result.steps == 6 and result.image.shape == content_image.shape
    assert p.lbfgs.iterate.experimental_get_tracing_count() == 1  # three shapes, one compiled L-BFGS loop
    assert p.objective.value_and_grad.experimental_get_tracing_count() == 1
    # the run optimised the full-size objective: its first recorded value is the coarse start's full-size loss
    np.testing.assert_allclose(result.history["total"][0], first, rtol=1e-4)


def test_resume_refuses_a_changed_schedule(tmp_path, content_image, style_image):
    def stop_at_2(step, image, terms):
        if step >= 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "c.ckpt.npz"
    r = stylize(
        content_image,
        style_image,
        size=48,
        steps=8,
        scales=(24,),
        scale_steps=3,
        progress=False,
        callback=stop_at_2,
        checkpoint=ckpt,
    )
    assert r.interrupted and ckpt.is_file()
    with pytest.raises(NSTError, match="cannot change scales"):
        stylize(resume=ckpt, scales=(32,), progress=False)
    with pytest.raises(NSTError, match="cannot change scale_steps"):
        stylize(resume=ckpt, scale_steps=5, progress=False)
    assert stylize(resume=ckpt, progress=False).steps == 8  # the same schedule goes on

"""A stylization run: `stylize` plans it (inputs, objective, start image, optionally coarse-to-fine), runs one
optimiser over it, and writes its outputs; the Result says what it produced.

The pieces live one layer down: the objective in objective.py, the optimisers in optimizers.py, the tracker in
tracking.py. Coarse-to-fine starts (`config.scales`, off by default) optimise at small sizes first, upsample and hand
the full-size run a better start; one Objective serves every coarse scale (its targets are recomputed per scale into
shape-free variables, so the loss is traced once for all of them).

A process keeps the objectives (and their L-BFGS) of its last runs: a later run of the same network, layers and
statistic, at any size, weights or images, takes one and traces nothing (a notebook kernel traces once per structure).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from . import checkpoint as ckpt_mod
from . import outputs
from .config import NSTError, StyleConfig, as_config
from .images import as_image, gray, resize
from .inputs import Inputs, check_arguments, prepare_inputs
from .lbfgs import ProjectedLBFGS
from .memory import MAX_HISTORY, Fit, fit_source
from .model import resolve_precision
from .objective import Objective, build_objective, initial_image, new_objective, regions
from .optimizers import Adam, new_lbfgs, run_adam, run_lbfgs, run_scipy_lbfgs
from .outputs import WriteError, save_image
from .tiling import TiledObjective
from .tracking import STALLED, Callback, Tracker, kept_start


@dataclass
class Result:
    """What a run produced: the best image, each loss term per step, and how it went."""

    image: np.ndarray
    history: dict[str, list[float]]
    best_loss: float
    config: StyleConfig
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    message: str = ""
    checkpoint: str | None = None  # where an interrupted run wrote its checkpoint
    writes: outputs.Writes = field(default_factory=outputs.Writes)  # where each output went, what failed
    unoptimised: bool = False  # the image is the start image: the run kept nothing better (the message says so)
    memory: dict = field(default_factory=dict)  # how it fitted in memory: estimate, budget, tile, L-BFGS history

    @property
    def steps(self) -> int:
        """Return the number of loss evaluations recorded."""
        return len(self.history["total"])


@dataclass
class Plan:
    """What a run optimises and from where: its config, inputs, objective, start image and any checkpoint."""

    config: StyleConfig
    inputs: Inputs
    objective: Objective | TiledObjective
    x0: np.ndarray
    ckpt: ckpt_mod.Checkpoint | None = None
    lbfgs: ProjectedLBFGS | None = None  # the objective's traced L-BFGS (coarse-to-fine's, a kept one, the run's)
    fit: Fit | None = None  # how it fits in memory (memory.fit): tiles, L-BFGS history, the note saying so

    @property
    def history(self) -> int:
        """Return the L-BFGS history (pairs) this run keeps."""
        return self.fit.history if self.fit else MAX_HISTORY


IDLE_KEPT = 4  # objectives (with their L-BFGS) kept for later runs in this process, newest first
_IDLE: list[tuple[Objective, ProjectedLBFGS | None]] = []
_IDLE_LOCK = threading.Lock()  # runs in threads never take the same one


def take_objective(
    config: StyleConfig, inputs: Inputs, weights: str | os.PathLike | None = None, whole_pixels: int = 0
) -> tuple[Objective | TiledObjective, ProjectedLBFGS | None]:
    """Return an Objective for `config` aimed at `inputs` (tiled if config.tile: its targets too, images of at most
    `whole_pixels` pixels whole), and the L-BFGS traced with it if any: a kept one that serves `config` (nothing to
    trace), else a new one (and None)."""
    with _IDLE_LOCK:
        kept = None
        if inputs.mask is None:  # a guided run (a mask) builds its own
            found = next((i for i, (o, _) in enumerate(_IDLE) if o.serves(config, weights)), None)
            kept = _IDLE.pop(found) if found is not None else None
    guides = None if inputs.mask is None else regions(inputs.mask, len(inputs.styles))
    objective, lbfgs = kept or (new_objective(config, weights, guides=guides), None)
    if config.tile:  # the same loss and gradient tile by tile (tiling.py), with its own L-BFGS
        objective, lbfgs = TiledObjective(objective, config.tile, whole_pixels=whole_pixels), None
    objective.aim(config, inputs.content, inputs.styles, inputs.blend)
    return objective, lbfgs


def keep_objective(p: Plan) -> None:
    """Keep the plan's objective and L-BFGS for a later run (the newest IDLE_KEPT; the L-BFGS lets go of its images)."""
    if isinstance(p.objective, TiledObjective):  # the Objective inside serves later runs; the tiled L-BFGS does not
        p = Plan(p.config, p.inputs, p.objective.objective, p.x0)
    if type(p.objective) is not Objective:  # a guided objective serves no other run
        return
    if p.lbfgs is not None and p.lbfgs.memory != MAX_HISTORY:  # a shortened history serves only its own size
        p.lbfgs = None
    if p.lbfgs is not None:
        p.lbfgs.resize((0,) + p.lbfgs.shape[1:])
    with _IDLE_LOCK:
        _IDLE.insert(0, (p.objective, p.lbfgs))
        del _IDLE[IDLE_KEPT:]


def forget_objectives() -> None:
    """Drop the kept objectives: the next run builds and traces its own (as a new process would)."""
    with _IDLE_LOCK:
        _IDLE.clear()


def stylize(
    content=None,
    style=None,
    config: StyleConfig | None = None,
    *,
    callback: Callback | None = None,
    progress: bool = True,
    weights: str | os.PathLike | None = None,
    init_image: np.ndarray | None = None,
    style_mask=None,
    output: str | os.PathLike | None = None,
    save_every: int | None = None,
    plot: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    during_run: contextlib.AbstractContextManager | None = None,
    **overrides,
) -> Result:
    """Return a Result: `content` restyled like `style` (paths, registry names or arrays, or a list of styles).

    Controls beyond the config: `style_mask` (style 1 where white, style 2 where black), `output` (an image written
    at the end, in its extension's format; intermediates and the interrupt checkpoint go beside it), `save_every` N
    steps, `plot` (loss curves image), `checkpoint` (where Ctrl-C writes the run's state), `resume` (a checkpoint to
    continue), `during_run` (a context entered around the optimiser's loop: the `nst` CLI defers signals inside it).
    Every output path is checked before any work (outputs.check_outputs).
    """
    check_arguments(content=content, style=style, callback=callback, progress=progress, save_every=save_every)
    if save_every is not None and output is None:
        raise NSTError("save_every needs an output path: intermediate images are written next to it")
    where = checkpoint if checkpoint is not None else (ckpt_mod.checkpoint_path(output) if output else None)
    outputs.check_outputs(
        output=output,
        save_every=save_every,
        plot=plot,
        checkpoint=where,
        inputs=outputs.input_files(content, style, style_mask, init_image, resume, weights),
        steps=overrides.get("steps", getattr(config, "steps", None)),
    )  # and none of them is an input or another output
    t0 = time.perf_counter()
    run_plan = plan(
        content,
        style,
        config,
        weights=weights,
        init_image=init_image,
        style_mask=style_mask,
        resume=resume,
        **overrides,
    )
    if run_plan.fit and run_plan.fit.note and progress:
        print(f"nst: {run_plan.fit.note}", file=sys.stderr)
    t1 = time.perf_counter()
    try:
        result = run(
            run_plan,
            callback=callback,
            progress=progress,
            save_every=save_every,
            output=output,
            checkpoint=where,
            during_run=during_run,
        )
    finally:
        keep_objective(run_plan)
    write_outputs(result, output=output, plot=plot)
    t2 = time.perf_counter()
    result.timings = {"setup_s": t1 - t0, "optimize_s": t2 - t1, "total_s": t2 - t0}
    return result


def plan(
    content=None,
    style=None,
    config: StyleConfig | None = None,
    *,
    weights: str | os.PathLike | None = None,
    init_image: np.ndarray | None = None,
    style_mask=None,
    resume: str | os.PathLike | None = None,
    **overrides,
) -> Plan:
    """Return the Plan of a run: config (merged with a checkpoint's), memory checked, inputs, objective (a kept one
    if it serves: take_objective), start image."""
    ckpt = ckpt_mod.load(resume) if resume is not None else None
    config = (
        _resumed_config(ckpt, content, style, style_mask, config, overrides) if ckpt else as_config(config, overrides)
    )
    precision = resolve_precision(config.precision)  # bfloat16 keeps half-size activations: the fit counts them
    fitted = fit_source(ckpt.inputs.content if ckpt else content, config.replace(precision=precision))  # before loading
    if fitted.tile and not config.tile:  # tiles chosen because the run would not fit untiled (fitted.note says so)
        config = config.replace(tile=fitted.tile)
    state = ckpt.optimizer_state if ckpt and config.optimizer == "lbfgs" else None
    if state:  # the checkpoint's L-BFGS history length, whatever this machine would choose now
        fitted = replace(fitted, history=int(np.shape(state[ProjectedLBFGS.STATE.index("s_hist")])[1]))
    inputs = ckpt.inputs if ckpt else prepare_inputs(config, content, style, style_mask)
    content_img, style_imgs = inputs.content, inputs.styles
    objective, lbfgs = take_objective(config, inputs, weights, fitted.whole_pixels)
    if lbfgs is not None and lbfgs.memory != fitted.history:
        lbfgs = None
    if ckpt:
        x0 = ckpt.image
        if state:  # its exact shapes are the optimiser's to check
            lbfgs = lbfgs or new_lbfgs(objective.value_and_grad, (1,) + x0.shape, fitted.history)
            if not lbfgs.restore(ckpt.optimizer_state, (1,) + x0.shape):
                raise NSTError(
                    f"checkpoint {resume} is malformed: its L-BFGS state does not fit its image (other shapes or "
                    "memory); give the .ckpt.npz an interrupted run wrote, unmodified, or start a new run"
                )
    elif init_image is not None:  # an array or a path, checked as any image (as_image), at the content's shape
        x0 = as_image(init_image, content_img.shape[:2])
        x0 = gray(x0) if inputs.colour == "luminance" else x0
    else:
        x0 = initial_image(config, content_img, style_imgs[0])
    if x0.shape != content_img.shape:
        x0 = resize(np.clip(x0, 0, 1), content_img.shape[:2])
    if config.scales and not ckpt and inputs.mask is None:  # coarse-to-fine start (config.scales; off by default)
        lbfgs = lbfgs or new_lbfgs(objective.value_and_grad, (1,) + content_img.shape, fitted.history)  # one trace
        x0 = coarse_to_fine(
            config, content_img, style_imgs, x0, inputs.blend, weights, objective=objective, lbfgs=lbfgs
        )
    return Plan(config, inputs, objective, x0, ckpt, lbfgs, fitted)


def run(
    p: Plan,
    *,
    callback: Callback | None = None,
    progress: bool = True,
    save_every: int | None = None,
    output: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    during_run: contextlib.AbstractContextManager | None = None,
) -> Result:
    """Return the Result of running the plan's optimiser; Ctrl-C or a failed intermediate write keeps the work so far.

    On such a stop the run's state goes to `checkpoint` (if given); `save_every` writes intermediates beside `output`;
    `during_run` is entered around the optimiser's loop.
    """
    config, inputs, ckpt = p.config, p.inputs, p.ckpt
    h, w = inputs.content.shape[:2]
    state = ckpt.optimizer_state if ckpt else None
    if config.optimizer == "lbfgs" and p.lbfgs is None:
        p.lbfgs = new_lbfgs(p.objective.value_and_grad, (1,) + p.x0.shape, p.history)
    lbfgs = p.lbfgs if config.optimizer == "lbfgs" else None
    adam = (
        Adam(p.objective.value_and_grad, p.x0[None], config.learning_rate, state)
        if config.optimizer == "adam"
        else None
    )
    snapshot = (lambda: (lbfgs.best()[0], lbfgs.state())) if lbfgs else adam.state if adam else None
    saver = outputs.SaveEvery(save_every, output) if save_every is not None else None
    shown = inputs.result_image if inputs.colour == "luminance" else None
    tracker = Tracker(
        config.steps,
        outputs.chain(callback, saver, to_result=shown),
        progress,
        f"{config.optimizer} {w}x{h}",
        tol=config.tol,
        state=snapshot,
    )
    if ckpt:
        tracker.restore(ckpt.history, ckpt.best_image, ckpt.best_loss)
        if tracker.count >= config.steps:
            tracker.message = (
                f"nothing to optimise: the checkpoint already holds {tracker.count} steps (steps={config.steps}); "
                f"the result is its best image (give more steps, e.g. --steps {tracker.count + config.steps}, to go on)"
            )
    interrupted, written, writes = False, None, outputs.Writes()
    try:
        if tracker.count < config.steps:
            with during_run or contextlib.nullcontext():
                if config.optimizer == "lbfgs":
                    run_lbfgs(p.objective, p.x0, config.steps, tracker, state=state, align=save_every, lbfgs=lbfgs)
                elif config.optimizer == "lbfgs-scipy":
                    run_scipy_lbfgs(p.objective, p.x0, config.steps, tracker)
                else:
                    run_adam(p.objective.value_and_grad, p.x0[None], config.steps, tracker, adam=adam)
    except (
        KeyboardInterrupt,
        WriteError,
    ) as exc:  # Ctrl-C, or a --save-every image could not be written: keep the work
        interrupted = isinstance(exc, KeyboardInterrupt)
        tracker.message = "interrupted; kept the best image so far"
        if not interrupted:
            tracker.message = f"stopped after step {tracker.count}"
            writes.failed.append(exc)
        if checkpoint is not None:
            kept = writes(
                outputs.RESUME_FROM, ckpt_mod.save, ckpt_mod.snapshot(tracker, config, inputs, p.x0), checkpoint
            )
            written = str(kept) if kept else None
    finally:
        tracker.close()
    best = tracker.best_image if tracker.best_image is not None else p.x0
    if tracker.best_image is None:  # no finite evaluation kept: say that the result is where the run started
        tracker.message = (tracker.message.split(";")[0] + "; " if tracker.message else "") + (
            "the result is the unoptimised start image"
        )
    elif kept_start(tracker.history["total"], tracker.best_loss):  # finite, but nothing better than the start
        tracker.message = "; ".join(m for m in (tracker.message, STALLED) if m)
    writes.note = tracker.message
    return Result(
        image=inputs.result_image(np.clip(best, 0.0, 1.0)),
        history=tracker.history,
        best_loss=tracker.best_loss,
        config=config,
        interrupted=interrupted,
        message=writes.message(),
        checkpoint=written,
        writes=writes,
        unoptimised=tracker.best_image is None,
        memory=memory_record(p),
    )


def memory_record(p: Plan) -> dict:
    """Return how the plan fitted in memory, for the log: estimate and budget (GiB), tile px (0: none), L-BFGS pairs."""
    fitted = p.fit or Fit(p.config.tile or 0, p.history, 0, None)
    return {
        "estimate_gib": round(fitted.need / 2**30, 2),
        "budget_gib": None if fitted.budget is None else round(fitted.budget / 2**30, 2),
        "tile": p.config.tile or 0,
        "lbfgs_history": p.history,
        "note": fitted.note,
    }


def write_outputs(
    result: Result, output: str | os.PathLike | None = None, plot: str | os.PathLike | None = None
) -> Result:
    """Return `result` after writing its image to `output` and its loss curves to `plot` (each if given; failures
    noted)."""
    writes = result.writes
    if output is not None:
        writes("the result", save_image, result.image, output)
    if plot is not None:
        from .plots import save_loss_plot  # documented lazy import: matplotlib only when a plot is asked for

        writes("the plot", save_loss_plot, result.history, plot, f"Loss terms per step ({result.config.optimizer})")
    result.message = writes.message()
    return result


def with_detail(coarse: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return `coarse` upsampled to `content`'s shape plus the content detail the coarse scale could not hold."""
    hw = content.shape[:2]
    low = resize(resize(content, coarse.shape[:2]), hw)
    return np.clip(resize(coarse, hw) + (content - low), 0.0, 1.0).astype(np.float32)


def coarse_to_fine(
    config: StyleConfig,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    x0: np.ndarray,
    blend: Sequence[float] | None = None,
    weights: str | os.PathLike | None = None,
    objective=None,
    history: list | None = None,
    lbfgs: ProjectedLBFGS | None = None,
) -> np.ndarray:
    """Return a full-size start image after L-BFGS at each of `config.scales` (coarse to fine) from `x0`.

    Content and styles are shrunk by the same factor at each scale (the style's scale relative to the image is
    kept). `objective`: the caller's Objective for `config` (its targets are set at each scale and put back to the
    full-size images at the end), else one is built at the first scale; `lbfgs`: the caller's ProjectedLBFGS for
    it, else one is made; both are shape-free, so every scale runs the same traced functions. `history` collects
    (scale, best loss) pairs.
    """
    x = x0
    for side in config.scales:
        factor = side / max(content.shape[:2])
        hw = tuple(max(16, round(d * factor)) for d in content.shape[:2])
        c = resize(content, hw)
        s = [resize(img, tuple(max(16, round(d * factor)) for d in img.shape[:2])) for img in styles]
        if objective is None:
            objective = build_objective(config.replace(size=side, scales=()), c, s, blend, weights)
        else:
            objective.set_content(c[None])
            objective.set_style([img[None] for img in s], blend)
        lbfgs = lbfgs or new_lbfgs(objective.value_and_grad, (1,) + c.shape)
        start = resize(np.clip(x, 0.0, 1.0), hw) if x.shape[:2] != hw else x
        if x is not x0:
            start = with_detail(x, c)
        tracker = Tracker(config.scale_steps, None, False, f"lbfgs {hw[1]}x{hw[0]}")  # the same L-BFGS as stylize
        run_lbfgs(objective, start.astype(np.float32), config.scale_steps, tracker, lbfgs=lbfgs)
        tracker.close()
        x = tracker.best_image if tracker.best_image is not None else start
        if history is not None:
            history.append((side, tracker.best_loss))
    if config.scales:  # the objective's targets back at full size, for the run that follows
        objective.set_content(content[None])
        objective.set_style([img[None] for img in styles], blend)
    return with_detail(x, content) if x is not x0 else x0


RESUME_FREE = ("steps", "learning_rate", "precision", "tol", "tile")  # how long and how a resumed run computes: free
RESUME_FIXED = tuple(f.name for f in fields(StyleConfig) if f.compare and f.name not in RESUME_FREE)  # the checkpoint's


def _resumed_config(
    ckpt: ckpt_mod.Checkpoint, content, style, style_mask, config: StyleConfig | None, overrides: dict
) -> StyleConfig:
    """Return the checkpoint's config with `overrides` applied, refusing any that would change what it optimises."""
    if content is not None or style is not None or style_mask is not None or config is not None:
        raise NSTError(
            "a resumed run continues the checkpoint's own images and config; do not pass content, style, a mask "
            "or a config (give what may change, such as steps=, as keywords)"
        )
    asked = ckpt.config.replace(**overrides)
    fixed = [
        f"{k} ({getattr(ckpt.config, k)!r} in the checkpoint, {getattr(asked, k)!r} asked)"
        for k in RESUME_FIXED
        if k in overrides and getattr(asked, k) != getattr(ckpt.config, k)
    ]
    if fixed:
        raise NSTError(
            f"cannot change {', '.join(fixed)} when resuming: the run goes on with the checkpoint's settings; "
            f"leave {'it' if len(fixed) == 1 else 'them'} out or start a new run (a resumed run may change "
            f"only {', '.join(RESUME_FREE)} and where its outputs go)"
        )
    return asked

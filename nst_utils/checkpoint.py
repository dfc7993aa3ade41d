"""Checkpoints: what an interrupted run needs to continue (images, optimiser state, config, history), in one .npz."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PRESERVE_COLORS, NSTError, StyleConfig, check_blend
from .inputs import Inputs
from .outputs import atomic_write
from .tracking import TERMS

VERSION = 1


@dataclass
class Checkpoint:
    """A run's state: where the optimiser stands, the best image so far, its inputs, config and loss history."""

    config: StyleConfig
    image: np.ndarray  # the optimiser's current image (Adam), the best image (lbfgs), the restart point (lbfgs-scipy)
    best_image: np.ndarray
    best_loss: float
    history: dict[str, list[float]]
    inputs: Inputs
    # Adam: iteration, moments, velocities; lbfgs: lbfgs.ProjectedLBFGS.STATE (the (s, y) memory, line search, best
    # image), so a resumed run continues the same L-BFGS run; lbfgs-scipy: none (it restarts from the image)
    optimizer_state: list[np.ndarray] = field(default_factory=list)

    @property
    def step(self) -> int:
        """Return how many loss evaluations the run had recorded."""
        return len(self.history["total"])


def checkpoint_path(output: str | os.PathLike) -> Path:
    """Return the checkpoint path that goes with an output image (out.png -> out.ckpt.npz)."""
    p = Path(output)
    return p.with_name(f"{p.stem}.ckpt.npz")


def save(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Return `path` after writing the checkpoint there atomically (arrays plus a JSON header, one .npz)."""
    inp = ckpt.inputs
    meta = {
        "version": VERSION,
        "config": ckpt.config.to_dict(),
        "history": ckpt.history,
        "best_loss": ckpt.best_loss,
        "n_styles": len(inp.styles),
        "blend": inp.blend,
        "colour": inp.colour,
        "n_optimizer": len(ckpt.optimizer_state),
    }
    arrays = {
        "image": ckpt.image,
        "best_image": ckpt.best_image,
        "content": inp.content,
        "meta": np.array(json.dumps(meta)),
    }
    arrays |= {f"style_{i}": s for i, s in enumerate(inp.styles)}
    arrays |= {f"opt_{i}": np.asarray(v) for i, v in enumerate(ckpt.optimizer_state)}
    if inp.mask is not None:
        arrays["mask"] = inp.mask
    if inp.original is not None:
        arrays["original"] = inp.original
    return atomic_write(path, lambda f: np.savez(f, **arrays))


LATER_TERMS = ("temporal",)  # loss terms added after version 1: a checkpoint without them holds zeros for them
MAX_STYLES = 64  # more style images than a checkpoint can name: a malformed header
MAX_OPTIMIZER_ARRAYS = 64  # lbfgs.ProjectedLBFGS.STATE has 18, Adam 3 (optimizers.Adam.kept), lbfgs-scipy none
ADAM_ARRAYS = 3  # Adam's iteration count, first and second moments


class _Malformed(Exception):
    """A checkpoint field that is not what this module writes (the message names it)."""


def load(path: str | os.PathLike) -> Checkpoint:
    """Return the Checkpoint stored at `path`, validated field by field (header types, array dtypes, ranks, shapes
    against its content image, finite images, the optimiser state's shapes), or raise NSTError saying why it cannot
    be used. The file is only read."""
    p = Path(path)
    if not p.exists() or p.is_dir():
        raise NSTError(
            f"checkpoint {p} does not exist; give the .ckpt.npz an interrupted run wrote (its path was printed)"
        )
    try:
        with open(p, "rb") as f:  # read whole: a pipe or FIFO works too (a zip needs seeking)
            raw = io.BytesIO(f.read())
        loaded = np.load(raw, allow_pickle=False)
        if not hasattr(loaded, "files"):  # a lone .npy array
            raise ValueError("a single array, not an .npz archive")
        with loaded as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise NSTError(
            f"{p} is not a readable nst checkpoint ({type(exc).__name__}: {exc}); "
            "give the .ckpt.npz an interrupted run wrote, or start a new run"
        ) from exc
    try:
        return _checked(p, arrays)
    except _Malformed as exc:
        raise NSTError(
            f"checkpoint {p} is malformed: {exc}; give the .ckpt.npz an interrupted run wrote, unmodified, or start "
            "a new run"
        ) from None


def _is_int(v) -> bool:
    """Return True if `v` is a JSON integer (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """Return True if `v` is a JSON number (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def _header(arrays: dict[str, np.ndarray]) -> dict:
    """Return the JSON header as a dict with the types `save` writes, or raise _Malformed naming a field."""
    m = arrays.get("meta")
    if m is None or m.shape != () or m.dtype.kind != "U":
        raise _Malformed("it has no JSON header (a 'meta' string)")
    try:
        meta = json.loads(str(m))
    except ValueError:
        raise _Malformed("its header is not JSON") from None
    if not isinstance(meta, dict):
        raise _Malformed(f"its header is a JSON {type(meta).__name__}, not an object")
    for key, ok, what in (
        ("version", _is_int, "an integer"),
        ("config", lambda v: isinstance(v, dict), "an object of StyleConfig fields"),
        ("history", lambda v: isinstance(v, dict), "an object of loss lists"),
        ("best_loss", lambda v: _is_number(v) and not math.isnan(v), "a number"),
        ("n_styles", lambda v: _is_int(v) and 1 <= v <= MAX_STYLES, f"an integer from 1 to {MAX_STYLES}"),
        ("n_optimizer", lambda v: _is_int(v) and 0 <= v <= MAX_OPTIMIZER_ARRAYS, "a small integer >= 0"),
        ("colour", lambda v: v is None or v in PRESERVE_COLORS, f"null or one of {', '.join(PRESERVE_COLORS)}"),
    ):
        if key not in meta:
            raise _Malformed(f"its header has no {key}")
        if not ok(meta[key]):
            raise _Malformed(f"{key} is {meta[key]!r}, not {what}")
    hist = meta["history"]
    if set(hist) not in (set(TERMS), set(TERMS) - set(LATER_TERMS)) or not all(
        isinstance(v, list) and all(map(_is_number, v)) for v in hist.values()
    ):
        raise _Malformed(f"history must hold one list of numbers for each of {', '.join(TERMS)}")
    if len({len(v) for v in hist.values()}) != 1:
        raise _Malformed("its history's lists differ in length")
    blend = meta.get("blend")
    if blend is not None and (
        not isinstance(blend, list) or len(blend) != meta["n_styles"] or not all(map(_is_number, blend))
    ):
        raise _Malformed(f"blend is {blend!r}, not null or {meta['n_styles']} numbers (one per style image)")
    return meta


def _history(hist: dict) -> dict[str, list[float]]:
    """Return a checked header's loss history with every term of TERMS (a term added later: zeros)."""
    n = len(hist["total"])
    return {k: [float(x) for x in hist[k]] if k in hist else [0.0] * n for k in TERMS}


def _image(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...] | None = None, rank: int = 3) -> np.ndarray:
    """Return array `name` as float32 if it is a finite float image (HxWx3, or HxW with rank 2) of `shape` if given,
    else raise _Malformed naming it."""
    if name not in arrays:
        raise _Malformed(f"it has no {name} array")
    a = arrays[name]
    if not np.issubdtype(a.dtype, np.floating):
        raise _Malformed(f"{name} has dtype {a.dtype}, not floats")
    if a.ndim != rank or (rank == 3 and a.shape[-1] != 3):
        raise _Malformed(f"{name} has shape {a.shape}, not {'HxWx3' if rank == 3 else 'HxW'}")
    if shape is not None and a.shape != shape:
        raise _Malformed(f"{name} has shape {a.shape}, not the content's {shape}")
    if not np.isfinite(a).all():
        raise _Malformed(f"{name} has NaN or infinite values (the run it comes from diverged)")
    return a.astype(np.float32)


def _optimizer_state(arrays: dict[str, np.ndarray], meta: dict, config: StyleConfig, hw3: tuple) -> list[np.ndarray]:
    """Return the optimiser's arrays if their count, types and shapes fit `config.optimizer` and an image of shape
    `hw3` (the L-BFGS state's exact shapes are checked where it is restored: run.run), else raise _Malformed."""
    state = []
    for i in range(meta["n_optimizer"]):
        a = arrays.get(f"opt_{i}")
        if a is None:
            raise _Malformed(f"it has no opt_{i} array (the header names {meta['n_optimizer']})")
        if a.dtype.kind not in "biuf":
            raise _Malformed(f"optimiser array opt_{i} has dtype {a.dtype}, not numbers")
        if a.ndim > 1 and a.dtype.kind == "f" and not np.isfinite(a).all():  # only losses (rank 1) may be infinite
            raise _Malformed(f"optimiser array opt_{i} has NaN or infinite values")
        state.append(a)
    if config.optimizer == "adam":
        want = [(), (1, *hw3), (1, *hw3)]
        if len(state) != ADAM_ARRAYS or [a.shape for a in state] != want:
            raise _Malformed(
                f"its Adam state has shapes {[a.shape for a in state]}, not {want} (iteration, moments, velocities)"
            )
        if state[0].dtype.kind not in "iu":
            raise _Malformed(f"its Adam iteration count has dtype {state[0].dtype}, not an integer")
    elif config.optimizer == "lbfgs" and any(a.ndim not in (1, 2, 3) or a.shape[0] != 1 for a in state):
        raise _Malformed(f"its L-BFGS state has shapes {[a.shape for a in state]}, not a batch of one image's")
    return state


def _checked(p: Path, arrays: dict[str, np.ndarray]) -> Checkpoint:
    """Return the Checkpoint in `arrays` after checking every field, or raise NSTError / _Malformed naming one."""
    meta = _header(arrays)
    if meta["version"] != VERSION:
        raise NSTError(
            f"checkpoint {p} has version {meta['version']}, this nst_utils reads version {VERSION}; "
            "start a new run (its saved image can be passed as init_image)"
        )
    try:
        config = StyleConfig(**meta["config"])
    except (TypeError, NSTError) as exc:
        raise _Malformed(f"its config is not a valid StyleConfig ({exc})") from None
    if meta["colour"] != config.preserve_colors:
        raise _Malformed(f"colour {meta['colour']!r} differs from its config's {config.preserve_colors!r}")
    content = _image(arrays, "content")
    if max(content.shape[:2]) != config.size or min(content.shape[:2]) < 16:
        raise _Malformed(f"content has shape {content.shape}, not an image of long side {config.size} (its size)")
    mask = _image(arrays, "mask", content.shape[:2], rank=2) if "mask" in arrays else None
    if mask is not None and meta["n_styles"] > 2:
        raise _Malformed(f"it has a style mask and {meta['n_styles']} style images (a mask takes one or two)")
    try:
        blend = check_blend(meta["blend"]) if meta["blend"] else None
    except NSTError as exc:
        raise _Malformed(f"its {exc}") from None
    inputs = Inputs(
        content=content,
        styles=[_image(arrays, f"style_{i}") for i in range(meta["n_styles"])],
        blend=blend,
        mask=mask,
        original=_image(arrays, "original", content.shape) if "original" in arrays else None,
        colour=meta["colour"],
    )
    return Checkpoint(
        config=config,
        image=_image(arrays, "image", content.shape),
        best_image=_image(arrays, "best_image", content.shape),
        best_loss=float(meta["best_loss"]),
        history=_history(meta["history"]),
        inputs=inputs,
        optimizer_state=_optimizer_state(arrays, meta, config, content.shape),
    )


def snapshot(tracker, config: StyleConfig, inputs: Inputs, x0: np.ndarray) -> Checkpoint:
    """Return a Checkpoint of a running optimisation from its tracker (optimiser state if the optimiser exposes it)."""
    image, best, best_loss, history, opt = tracker.snapshot(x0)
    return Checkpoint(
        config=config,
        image=np.asarray(image, np.float32),
        best_image=np.asarray(best, np.float32),
        best_loss=best_loss,
        history=history,
        inputs=inputs,
        optimizer_state=opt,
    )

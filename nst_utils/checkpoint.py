"""Checkpoints: what an interrupted run needs to continue (images, optimiser state, config, history), in one .npz."""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import NSTError, StyleConfig
from .inputs import Inputs
from .outputs import atomic_write

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


def load(path: str | os.PathLike) -> Checkpoint:
    """Return the Checkpoint stored at `path`, or raise NSTError saying why it cannot be used."""
    p = Path(path)
    if not p.exists() or p.is_dir():
        raise NSTError(
            f"checkpoint {p} does not exist; give the .ckpt.npz an interrupted run wrote (its path was printed)"
        )
    try:
        with open(p, "rb") as f:  # read whole: a pipe or FIFO works too (a zip needs seeking)
            raw = io.BytesIO(f.read())
        with np.load(raw, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != VERSION:
                raise NSTError(
                    f"checkpoint {p} has version {meta.get('version')}, this nst_utils reads version {VERSION}; "
                    "start a new run (its saved image can be passed as init_image)"
                )
            inputs = Inputs(
                content=z["content"],
                styles=[z[f"style_{i}"] for i in range(meta["n_styles"])],
                blend=tuple(meta["blend"]) if meta["blend"] else None,
                mask=z["mask"] if "mask" in z else None,
                original=z["original"] if "original" in z else None,
                colour=meta["colour"],
            )
            return Checkpoint(
                config=StyleConfig(**meta["config"]),
                image=z["image"],
                best_image=z["best_image"],
                best_loss=float(meta["best_loss"]),
                history={k: list(v) for k, v in meta["history"].items()},
                inputs=inputs,
                optimizer_state=[z[f"opt_{i}"] for i in range(meta["n_optimizer"])],
            )
    except NSTError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise NSTError(
            f"{p} is not a readable nst checkpoint ({type(exc).__name__}: {exc}); "
            "give the .ckpt.npz an interrupted run wrote, or start a new run"
        ) from exc


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

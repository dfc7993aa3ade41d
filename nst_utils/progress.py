"""Progress outputs of a run: intermediate images every N steps, chained callbacks, and what was written where."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import NSTError
from .images import WriteError, check_output, save_image


def intermediate_path(output: str | os.PathLike, step: int) -> Path:
    """Return the path of the image saved at `step` next to `output` (out.png -> out_0010.png)."""
    p = Path(output)
    return p.with_name(f"{p.stem}_{step:04d}{p.suffix or '.png'}")


def check_outputs(*, output: str | os.PathLike | None = None, save_every: int | None = None,
                  plot: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
                  log: str | os.PathLike | None = None, flags: dict[str, str] | None = None) -> None:
    """Return None if every file a run would write can be written; else raise NSTError naming the first that can't.

    Checked before any work (images.check_output): the result, the plot, the checkpoint, a log, and the existing
    `--save-every` images beside the output. `flags` names each option in the message (default: the keyword).
    """
    names = flags or {}
    for key, path, image in (("output", output, True), ("plot", plot, True), ("checkpoint", checkpoint, False),
                             ("log", log, False)):
        if path is not None:
            check_output(path, image=image, flag=names.get(key, f"{key}="))
    if save_every is not None and output is not None:
        first = intermediate_path(output, 0)
        pattern = glob.escape(str(first)).replace("0000", "[0-9][0-9][0-9][0-9]*")
        for path in sorted(glob.glob(pattern)):  # images a previous run left: a FIFO among them is never replaced
            check_output(path, flag=names.get("save_every", "save_every="))


class SaveEvery:
    """A stylize callback that writes the current image every `every` steps next to `output`, atomically."""

    def __init__(self, every: int, output: str | os.PathLike, finish: Callable[[np.ndarray], np.ndarray] | None = None):
        if not isinstance(every, int) or isinstance(every, bool) or every <= 0:
            raise NSTError(f"save_every must be a positive integer, got {every!r}")
        self.every, self.output, self.finish = every, Path(output), finish
        self.written: list[Path] = []

    def __call__(self, step: int, image: np.ndarray, terms: dict) -> None:
        """Save `image` if `step` is a multiple of `every`; never asks to stop."""
        if step % self.every == 0:
            img = self.finish(image) if self.finish else image
            self.written.append(save_image(img, intermediate_path(self.output, step)))


def chain(*callbacks: Callable | None, finish: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable | None:
    """Return one callback calling each given one in turn on finish(image) (True if any asks to stop), or None."""
    cbs = [c for c in callbacks if c is not None]
    if not cbs:
        return None
    if len(cbs) == 1 and finish is None:
        return cbs[0]

    def each(step: int, image: np.ndarray, terms: dict) -> bool:
        """Return True if any callback asks to stop."""
        img = finish(image) if finish is not None else image
        return any([bool(c(step, img, terms)) for c in cbs])

    return each


RESUME_FROM = "the checkpoint to resume from"  # the label stylize gives the checkpoint it writes


@dataclass
class Writes:
    """A run's output files: each is tried even after another failed, and any failures read as one line."""

    failed: list[WriteError] = field(default_factory=list)
    where: dict[str, Path | None] = field(default_factory=dict)  # "the result" -> where it went; None: nowhere
    lost: dict[str, str] = field(default_factory=dict)  # what went nowhere -> why its fallback copy failed too
    note: str = ""  # how the run ended, when not by finishing ("interrupted; ...", "stopped after step 5")

    def __call__(self, what: str, write: Callable[..., Path], *args) -> Path | None:
        """Return where `write(*args)` put `what`: the path asked for, a fallback copy, or None (failure recorded)."""
        try:
            path = write(*args)
        except WriteError as exc:
            self.failed.append(exc)
            path = exc.kept
            if path is None:
                self.lost[what] = exc.kept_reason
        self.where[what] = path
        return path

    def message(self) -> str:
        """Return one line: the note and, after a failure, what could not be written, why, and where each output is."""
        ckpt = self.where.get(RESUME_FROM)
        if not self.failed:
            return f"{self.note} and wrote checkpoint {ckpt} (continue with resume / --resume)" if ckpt else self.note
        reasons = {e.reason for e in self.failed}
        paths = ", ".join(str(e.path) if len(reasons) == 1 else f"{e.path} ({e.reason})" for e in self.failed)
        parts = [f"could not write {paths}" + (f": {reasons.pop()}" if len(reasons) == 1 else "")]
        parts += [self.note] if self.note else []
        parts.append(", ".join(f"{what} is in {path}" if path else f"{what} could not be written anywhere ({self.lost[what]})"
                               for what, path in self.where.items()))
        return "; ".join(p for p in parts if p)

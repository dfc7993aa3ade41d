"""Run a tutorial notebook under papermill with tiny parameters; shared by the notebook tests.

Each executed notebook is also kept as `build/executed/<name>.ipynb` (git-ignored; `NST_EXECUTED_DIR` moves it):
`make book-quick` and CI build the tutorial site from these copies instead of running the notebooks a second time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = Path(os.environ.get("NST_EXECUTED_DIR") or ROOT / "build" / "executed")
INLINE = "module://matplotlib_inline.backend_inline"


def run_notebook(name: str, tmp_path: Path, cell_timeout: int = 600, **parameters) -> nbformat.NotebookNode:
    """Return the executed notebook `notebooks/<name>.ipynb` (run in notebooks/, output kept in tmp_path)."""
    out = tmp_path / f"{name}.out.ipynb"
    backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE  # the kernel embeds its figures, as in Jupyter, so the kept copy shows them
    try:
        pm.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(NOTEBOOKS),
            execution_timeout=cell_timeout,
            progress_bar=False,
        )
    finally:
        if backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = backend
    EXECUTED.mkdir(parents=True, exist_ok=True)
    kept = EXECUTED / f".{name}.ipynb.tmp"
    shutil.copyfile(out, kept)
    kept.replace(EXECUTED / f"{name}.ipynb")  # whole or not at all: the site never reads a half-written copy
    return nbformat.read(out, as_version=4)


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """Return all text/plain and stream output of an executed notebook, joined."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(
                o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", "")
            )
    return "\n".join(parts)

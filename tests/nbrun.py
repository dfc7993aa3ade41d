"""Run a tutorial notebook under papermill with tiny parameters; shared by the notebook tests."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill as pm

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, tmp_path: Path, cell_timeout: int = 600, **parameters) -> nbformat.NotebookNode:
    """Return the executed notebook `notebooks/<name>.ipynb` (run in notebooks/, output kept in tmp_path)."""
    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        execution_timeout=cell_timeout,
        progress_bar=False,
    )
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

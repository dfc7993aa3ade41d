"""Tiled against untiled evaluation: peak resident memory and seconds per evaluation, one process per row.

Each row stylizes a square crop of the default photo with the default painting at one size, untiled or in tiles of
a given size: `run.plan` (the memory fit, the inputs, the targets, tile by tile where tiled), then three L-BFGS
evaluations, one per compiled call (the first traces; s/eval is the faster of the two warm ones, L-BFGS step
included). A process's peak memory only grows, so every
row is a process of its own (`--row SIZE TILE`, one JSON line); the parent prints the table and each tiled row's
time over the untiled row's at its size.

    python -m nst_utils.bench_tiles             # 512, 1024 and 2048 px untiled and tiled, 4096 px tiled
    python -m nst_utils.bench_tiles --quick     # 256 and 512 px (a CI-sized check)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from .assets import default_images, image_path
from .config import StyleConfig
from .host import peak_memory_mb
from .images import load_image
from .memory import SKIP_ENV
from .run import plan, run

ROWS = ((512, 0), (512, 256), (1024, 0), (1024, 512), (2048, 0), (2048, 512), (2048, 1024), (4096, 512))
QUICK_ROWS = ((256, 0), (256, 128), (512, 0), (512, 256))


def square_photo() -> np.ndarray:
    """Return the default photo's central square crop, float32 in [0, 1]."""
    photo = load_image(image_path(default_images()[0]))
    h, w = photo.shape[:2]
    side = min(h, w)
    return np.ascontiguousarray(photo[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2])


def measure(size: int, tile: int, evals: int = 3) -> dict:
    """Return one row: peak MiB, seconds of the plan and of the run, and of its fastest warm evaluation."""
    t0 = time.perf_counter()
    p = plan(square_photo(), default_images()[1], StyleConfig(size=size, steps=evals, tile=tile))
    t1 = time.perf_counter()
    stamps = []
    run(p, progress=False, callback=lambda step, image, terms: stamps.append(time.perf_counter()))
    t2 = time.perf_counter()
    return {
        "size": size,
        "tile": p.config.tile or 0,
        "tiles": p.objective.tiles(size, size) if p.config.tile else 1,
        "lbfgs_history": p.history,
        "estimate_gib": round(p.fit.need / 2**30, 2) if p.fit else None,
        "plan_s": round(t1 - t0, 1),
        "run_s": round(t2 - t1, 1),
        "eval_s": round(float(np.min(np.diff(stamps))), 2),  # the first evaluation traces; the later ones are warm
        "peak_mib": round(peak_memory_mb()),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the table (or, with --row, one row's JSON); return the exit code."""
    p = argparse.ArgumentParser(prog="python -m nst_utils.bench_tiles", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="256 and 512 px only")
    p.add_argument("--row", nargs=2, type=int, metavar=("SIZE", "TILE"), help="measure one row in this process")
    args = p.parse_args(argv)
    if args.row:
        print(json.dumps(measure(*args.row)), flush=True)
        return 0
    rows, untiled = [], {}
    print("size  tile  tiles  history  estimate GiB  peak GiB  s/eval  vs untiled  plan s  run s", flush=True)
    for size, tile in QUICK_ROWS if args.quick else ROWS:
        child = [sys.executable, "-m", "nst_utils.bench_tiles", "--row", str(size), str(tile)]
        done = subprocess.run(child, capture_output=True, text=True, env={**os.environ, SKIP_ENV: "1"})
        if done.returncode:
            print(f"{size:>4}  {tile or '-':>4}  failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(r)
        if not r["tile"]:
            untiled[size] = r["eval_s"]
        ratio = f"{r['eval_s'] / untiled[size]:.2f}x" if r["tile"] and size in untiled else "-"
        print(
            f"{size:>4}  {r['tile'] or '-':>4}  {r['tiles']:>5}  {r['lbfgs_history']:>7}  {r['estimate_gib']:>12}  "
            f"{r['peak_mib'] / 1024:>8.2f}  {r['eval_s']:>6}  {ratio:>10}  {r['plan_s']:>6}  {r['run_s']:>5}",
            flush=True,
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side benchmark: the TensorFlow tutorial's Adam recipe against this project's default (fast) path.

Both run in one process, one after the other, on the same objective (the package's default objective: the tutorial's
layers and weights) at the same size, each from a fresh `stylize` call (trace and target time included). Every
objective value printed is the full-size objective; the two final images are re-evaluated on one shared objective.

    python -m nst_utils.bench            # 512 px, 1000 tutorial steps, then ours for as long (~42 min, 2 cores)
    python -m nst_utils.bench --fast-max-s 600   # the same, ours capped at 600 s (~31 min)
    python -m nst_utils.bench --quick    # 128 px, 100 tutorial steps (a CI-sized check)

The last line is `speedup X.Yx`: the tutorial's wall time divided by the time our path takes to reach the tutorial's
final objective (0.0x when it does not reach it within its budget).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable

import numpy as np


def conv_gflop(height: int, width: int, deepest: str = "block5_conv2") -> float:
    """Return GFLOP of one VGG19 forward pass plus its input gradient (about twice the forward) up to `deepest`."""
    from .model import BLOCKS

    flops, h, w, cin = 0.0, height, width, 3
    for b, n, c in BLOCKS:
        for i in range(1, n + 1):
            flops += 2.0 * h * w * 9 * cin * c
            cin = c
            if f"block{b}_conv{i}" == deepest:
                return 2.0 * flops / 1e9  # forward + gradient with respect to the input (no weight gradients)
        h, w = h // 2, w // 2
    return 2.0 * flops / 1e9


def best_seconds(fn: Callable[[], object], reps: int = 3) -> float:
    """Return the shortest wall time of `reps` calls of `fn` after one untimed warm-up call (tracing, caches)."""
    fn()
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(n: int = 2048, reps: int = 4, dtype: str = "float32") -> float:
    """Return the best n x n x n matmul rate in GFLOP/s (float32 or bfloat16) measured with TensorFlow here."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((n, n)), dtype)
    b = tf.cast(tf.random.uniform((n, n)), dtype)
    return 2.0 * n**3 / best_seconds(lambda: float(tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))), reps) / 1e9


def evaluation_seconds(content=None, style=None, size: int = 256, precision: str = "float32",
                       reps: int = 3) -> tuple[float, float]:
    """Return (best seconds for one objective value and gradient, objective at the content image) in `precision`."""
    import tensorflow as tf

    from .config import StyleConfig
    from .controls import prepare_inputs
    from .optimize import build_objective

    config = StyleConfig(size=size, precision=precision)
    inputs = prepare_inputs(config, content, style)
    objective = build_objective(config, inputs.content, inputs.styles, inputs.blend)
    image = tf.constant(inputs.content[None])
    seconds = best_seconds(lambda: objective.value_and_grad(image)[1].numpy(), reps)
    return seconds, float(tf.reduce_sum(objective.value_and_grad(image)[0]["total"]))


def peak_mb() -> float:
    """Return this process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Clock:
    """A stylize callback that records (seconds since start, total objective) per evaluation; stops on a budget.

    With `verify` (image -> float32 objective) and `target`, every new best image whose own objective is within 10%
    of the target is re-evaluated by `verify` until one reaches it (a run in bfloat16 is judged on the float32
    objective); the time spent verifying is left out of the clock.
    """

    def __init__(self, budget_s: float | None = None, max_evals: int | None = None, name: str = "", every: int = 0,
                 verify=None, target: float | None = None):
        self.t0 = time.perf_counter()
        self.points: list[tuple[float, float]] = []
        self.budget_s, self.max_evals = budget_s, max_evals
        self.name, self.every = name, every
        self.verify, self.target = verify, target
        self.reached: tuple[int, float, float] | None = None  # (evaluation, seconds, verified objective)
        self.best = float("inf")

    def __call__(self, step: int, image, terms: dict) -> bool:
        self.points.append((time.perf_counter() - self.t0, float(terms["total"])))
        value = self.points[-1][1]
        if self.verify is not None and self.reached is None and value < self.best and value <= 1.1 * self.target:
            t = time.perf_counter()
            checked = self.verify(image)
            if checked <= self.target:
                self.reached = (step, self.points[-1][0], checked)
            self.t0 += time.perf_counter() - t
        self.best = min(self.best, value)
        if self.every and step % self.every == 0:
            print(f"  {self.name} step {step}: {self.points[-1][0]:.1f} s, objective {self.points[-1][1]:.4g}", flush=True)
        over_time = self.budget_s is not None and self.points[-1][0] >= self.budget_s
        return over_time or (self.max_evals is not None and step >= self.max_evals)

    def first_time_at_or_below(self, value: float) -> float | None:
        """Return the time of the first evaluation whose objective is <= value (verified if verifying), or None."""
        if self.verify is not None:
            return self.reached[1] if self.reached else None
        return next((t for t, v in self.points if v <= value), None)

    def evals_to(self, value: float) -> int | None:
        """Return how many evaluations it took to reach `value` (verified if verifying), or None."""
        if self.verify is not None:
            return self.reached[0] if self.reached else None
        return next((i + 1 for i, (_, v) in enumerate(self.points) if v <= value), None)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; the last line is `speedup X.Yx`."""
    p = argparse.ArgumentParser(prog="python -m nst_utils.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized: 128 px and 100 tutorial steps")
    p.add_argument("--size", type=int, help="long side in px (default 512, 128 with --quick)")
    p.add_argument("--baseline-steps", type=int, help="tutorial Adam steps (default 1000, 100 with --quick)")
    p.add_argument("--fast-max-s", type=float, default=None,
                   help="cap our path's wall time (default: the baseline's time, i.e. equal time)")
    p.add_argument("--fast-max-evals", type=int, default=5000, help="cap our path's evaluations (default %(default)s)")
    p.add_argument("--content", default=None, help="content image (default: the package default)")
    p.add_argument("--style", default=None, help="style image (default: the package default)")
    p.add_argument("--every", type=int, default=0, help="print progress every N evaluations (default: never)")
    p.add_argument("--save", metavar="PREFIX", help="write PREFIX_tutorial.png, PREFIX_fast.png and PREFIX.json")
    args = p.parse_args(argv)
    size = args.size or (128 if args.quick else 512)
    steps = args.baseline_steps or (100 if args.quick else 1000)

    import tensorflow as tf

    from .config import StyleConfig
    from .controls import prepare_inputs
    from .model import resolve_precision
    from .optimize import build_objective, stylize

    ours_cfg = StyleConfig(size=size, steps=args.fast_max_evals)  # the default path, given enough evaluations
    base_cfg = StyleConfig(size=size, steps=steps, optimizer="adam", precision="float32")  # the tutorial, as it is
    objective_fields = ("size", "alpha", "beta", "tv", "content_layers", "style_layers", "style_layer_weights",
                        "pooling", "init", "style_scale", "style_blend", "style_layer_weight_exp", "preserve_colors")
    assert all(getattr(ours_cfg, f) == getattr(base_cfg, f) for f in objective_fields), "objectives differ"

    inputs = prepare_inputs(base_cfg, args.content, args.style)
    h, w = inputs.content.shape[:2]
    precision = resolve_precision(ours_cfg.precision)
    print(f"benchmark: {w}x{h} px, tutorial Adam {steps} steps (float32) vs default path "
          f"(optimizer {ours_cfg.optimizer}, precision {ours_cfg.precision} -> {precision}); "
          f"TF {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads", flush=True)
    n_mm = 1024 if size <= 256 else 2048
    peak = {dt: matmul_peak(n_mm, dtype=dt) for dt in ("float32", "bfloat16")}
    per_eval = conv_gflop(h, w)
    print(f"matmul peak {peak['float32']:.0f} GFLOP/s float32, {peak['bfloat16']:.0f} GFLOP/s bfloat16; "
          f"VGG19 forward + input gradient {per_eval:.1f} GFLOP per evaluation", flush=True)

    # One float32 objective judges everything: the tutorial's run, ours while it runs (bf16 runs are re-checked in
    # float32 near the target, that time left out), and both final images.
    check = build_objective(base_cfg, inputs.content, inputs.styles, inputs.blend)

    def full(img: np.ndarray) -> float:
        return float(tf.reduce_sum(check.loss_terms(tf.constant(img[None], tf.float32))["total"]))

    base_clock = Clock(name="tutorial", every=args.every)
    base = stylize(args.content, args.style, base_cfg, callback=base_clock, progress=False)
    base_s = base_clock.points[-1][0]
    base_final = base.best_loss
    print(f"tutorial Adam: {len(base_clock.points)} steps in {base_s:.1f} s, final objective {base_final:.4g}, "
          f"{per_eval * len(base_clock.points) / base_s:.0f} GFLOP/s, peak memory so far {peak_mb():.0f} MiB", flush=True)

    budget = args.fast_max_s if args.fast_max_s is not None else base_s
    ours_clock = Clock(budget_s=budget, max_evals=args.fast_max_evals, name="default path", every=args.every,
                       verify=full if precision != "float32" else None, target=base_final)
    ours = stylize(args.content, args.style, ours_cfg, callback=ours_clock, progress=False)
    ours_s = ours_clock.points[-1][0]
    reach = ours_clock.first_time_at_or_below(base_final)
    n_reach = ours_clock.evals_to(base_final)
    base_check, ours_check = full(base.image), full(ours.image)
    for dt in peak:  # again at the end: the best of both (load varies)
        peak[dt] = max(peak[dt], matmul_peak(n_mm, dtype=dt))

    rate = per_eval * len(ours_clock.points) / ours_s
    print(f"default path: {len(ours_clock.points)} full-size evaluations in {ours_s:.1f} s "
          f"(budget {budget:.0f} s), final objective {ours.best_loss:.4g} ({precision}), {rate:.0f} GFLOP/s")
    print(f"re-evaluated on one float32 full-size objective: tutorial {base_check:.4g}, default path {ours_check:.4g}")
    print()
    print("| run | size | evals | wall s | objective (float32) |")
    print("|---|---|---|---|---|")
    print(f"| tutorial Adam (lr .02, b1 .99, eps .1) | {w}x{h} | {len(base_clock.points)} | {base_s:.1f} | {base_final:.4g} |")
    if reach is not None:
        reached = ours_clock.reached[2] if ours_clock.reached else ours_clock.points[n_reach - 1][1]
        print(f"| default path, to the tutorial's final objective | {w}x{h} | {n_reach} | {reach:.1f} | {reached:.4g} |")
    label = "at equal time" if budget >= base_s else f"at its {budget:.0f} s cap"
    print(f"| default path, {label} | {w}x{h} | {len(ours_clock.points)} | {ours_s:.1f} | {ours_check:.4g} |")
    print()
    print(f"baseline time {base_s:.1f} s, final objective {base_final:.4g}")
    if reach is None:
        print(f"time to baseline quality: not reached in {ours_s:.1f} s (best {ours_check:.4g})")
    else:
        print(f"time to baseline quality {reach:.1f} s, ratio {base_s / reach:.2f}")
        print(f"evaluations to baseline quality {n_reach} (tutorial {len(base_clock.points)}), "
              f"ratio {len(base_clock.points) / n_reach:.2f} (independent of CPU contention)")
    print(f"our final objective at equal time {ours_check:.4g}" if budget >= base_s else
          f"our final objective at its {budget:.0f} s cap {ours_check:.4g} (not an equal-time run)")
    print(f"peak memory {peak_mb():.0f} MiB (whole process)")
    print(f"achieved {per_eval * len(base_clock.points) / base_s:.0f} GFLOP/s (tutorial, float32 peak "
          f"{peak['float32']:.0f}), {rate:.0f} GFLOP/s (default path, {precision} peak {peak[precision]:.0f})")
    if args.save:
        from .images import save_image

        save_image(base.image, f"{args.save}_tutorial.png")
        save_image(ours.image, f"{args.save}_fast.png")
        with open(f"{args.save}.json", "w") as f:
            json.dump({"size": [w, h], "precision": precision, "baseline": base_clock.points, "ours": ours_clock.points,
                       "reached": ours_clock.reached, "peak_gflops": peak, "gflop_per_eval": per_eval,
                       "peak_mb": peak_mb()}, f)
    print(f"speedup {base_s / reach if reach else 0.0:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side benchmark: the TensorFlow tutorial's Adam recipe against scipy's L-BFGS-B and this project's L-BFGS.

All run in one process, one after the other, on the same objective (the package's default objective: the tutorial's
layers and weights) at the same size, each from a fresh `stylize` call started cold (the kept objectives forgotten:
trace and target time included, as in a new process). Every objective value printed is the full-size objective; the
final images are re-evaluated on one shared objective. Each L-BFGS then runs once more, warm (it takes the objective
the last run kept), and its fixed cost and time to the target are printed: what a notebook's later runs pay.

    python -m nst_utils.bench            # 512 px, 1000 tutorial steps, then each L-BFGS for as long
    python -m nst_utils.bench --fast-max-s 600   # the same, each L-BFGS capped at 600 s
    python -m nst_utils.bench --quick    # 128 px, 100 tutorial steps (a CI-sized check)
    python -m nst_utils.bench --quick --json     # also one JSON object per run (a line each)

One row per optimiser: evaluations and seconds to the tutorial's final objective, the objective at equal time, and
host milliseconds per evaluation: the optimiser's own wall time per evaluation, outside the value-and-gradient
graph, at this image size (`optimizer_ms_per_eval`: the same optimiser on a separable quadratic of the image's shape,
which costs next to nothing, minus that quadratic's own time). The last line is `speedup X.Yx`: the tutorial's wall
time divided by the time the default optimiser takes to reach the tutorial's final objective (0.0x when it does not
reach it within its budget).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import tensorflow as tf

from .config import StyleConfig, layer_shapes
from .host import best_seconds, freeze_heap, peak_memory_mb
from .inputs import prepare_inputs
from .model import resolve_precision
from .objective import build_objective
from .optimizers import Adam, new_lbfgs, run_adam, run_lbfgs, run_scipy_lbfgs
from .outputs import save_image, write_text
from .run import forget_objectives, stylize
from .tracking import TERMS, Tracker


def conv_gflop(height: int, width: int, deepest: str = "block5_conv2") -> float:
    """Return GFLOP of one VGG19 forward pass plus its input gradient (about twice the forward) up to `deepest`."""
    flops, cin = 0.0, 3
    for name, h, w, c in layer_shapes(height, width, deepest):
        if "_conv" in name:
            flops += 2.0 * h * w * 9 * cin * c
            cin = c
    return 2.0 * flops / 1e9  # forward + gradient with respect to the input (no weight gradients)


def matmul_peak(n: int = 2048, reps: int = 4, dtype: str = "float32") -> float:
    """Return the best n x n x n matmul rate in GFLOP/s (float32 or bfloat16) measured with TensorFlow here."""
    a = tf.cast(tf.random.uniform((n, n)), dtype)
    b = tf.cast(tf.random.uniform((n, n)), dtype)
    return 2.0 * n**3 / best_seconds(lambda: float(tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))), reps) / 1e9


def evaluation_seconds(
    content=None, style=None, size: int = 256, precision: str = "float32", reps: int = 3
) -> tuple[float, float]:
    """Return (best seconds for one objective value and gradient, objective at the content image) in `precision`."""
    config = StyleConfig(size=size, precision=precision)
    inputs = prepare_inputs(config, content, style)
    objective = build_objective(config, inputs.content, inputs.styles, inputs.blend)
    image = tf.constant(inputs.content[None])
    seconds = best_seconds(lambda: objective.value_and_grad(image)[1].numpy(), reps)
    return seconds, float(tf.reduce_sum(objective.value_and_grad(image)[0]["total"]))


class Quadratic:
    """A separable quadratic over images of one shape: an objective that costs next to nothing, to time optimisers."""

    def __init__(self, shape: tuple[int, ...]):
        rng = np.random.default_rng(0)
        self.weight = tf.constant(rng.uniform(0.1, 10.0, (1,) + tuple(shape)), tf.float32)
        self.centre = tf.constant(rng.uniform(-0.5, 1.5, (1,) + tuple(shape)), tf.float32)  # partly outside [0, 1]
        self.value_and_grad = tf.function(self._value_and_grad, autograph=False)

    def _value_and_grad(self, image: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Return ({term: (batch,) values}, gradient); the whole value sits in `total` (and `content`)."""
        r = image - self.centre
        total = tf.reduce_sum(self.weight * r * r, axis=[1, 2, 3])
        return {k: total if k in ("total", "content") else tf.zeros_like(total) for k in TERMS}, 2.0 * self.weight * r


def optimizer_ms_per_eval(optimizer: str, shape: tuple[int, ...], evals: int = 60) -> float:
    """Return an optimiser's own wall ms per evaluation for images of `shape` (its cost outside the objective).

    The optimiser minimises a near-free quadratic of that shape for n and for 2n evaluations (the difference leaves
    tracing and start-up out), minus the quadratic's own time per evaluation.
    """
    quad = Quadratic(shape)
    x0 = np.full(shape, 0.5, np.float32)
    lbfgs = new_lbfgs(quad.value_and_grad, (1,) + shape)  # one of each, kept across the timed runs: traced once
    adam = Adam(quad.value_and_grad, x0[None])

    def timed(n: int) -> float:
        tracker = Tracker(n, None, False, optimizer)
        t = time.perf_counter()
        if optimizer == "lbfgs":
            run_lbfgs(quad, x0, n, tracker, lbfgs=lbfgs)
        elif optimizer == "lbfgs-scipy":
            run_scipy_lbfgs(quad, x0, n, tracker)
        else:
            adam.image.assign(x0[None])
            run_adam(quad.value_and_grad, x0[None], n, tracker, adam=adam)
        return time.perf_counter() - t

    timed(2)  # trace
    per_eval = (timed(2 * evals) - timed(evals)) / evals
    image = tf.constant(x0[None])
    alone = best_seconds(lambda: quad.value_and_grad(image)[0]["total"].numpy(), 5)
    return 1e3 * max(per_eval - alone, 0.0)


class Clock:
    """A stylize callback that records (seconds since start, total objective) per call and the step of each call;
    stops on a budget. Optimisers that call back once per k evaluations (ours) get their times interpolated.

    With `verify` (image -> float32 objective) and `target`, every new best image whose own objective is within 10%
    of the target is re-evaluated by `verify` until one reaches it (a run in bfloat16 is judged on the float32
    objective); the time spent verifying is left out of the clock.
    """

    def __init__(
        self,
        budget_s: float | None = None,
        max_evals: int | None = None,
        name: str = "",
        every: int = 0,
        verify=None,
        target: float | None = None,
    ):
        self.t0 = time.perf_counter()
        self.points: list[tuple[float, float]] = []
        self.steps: list[int] = []
        self.budget_s, self.max_evals = budget_s, max_evals
        self.name, self.every = name, every
        self.verify, self.target = verify, target
        self.reached: tuple[int, float, float] | None = None  # (evaluation, seconds, verified objective)
        self.best = float("inf")

    def __call__(self, step: int, image, terms: dict) -> bool:
        self.points.append((time.perf_counter() - self.t0, float(terms["total"])))
        self.steps.append(step)
        value = self.points[-1][1]
        if self.verify is not None and self.reached is None and value < self.best and value <= 1.1 * self.target:
            t = time.perf_counter()
            checked = self.verify(image)
            if checked <= self.target:
                self.reached = (step, self.points[-1][0], checked)
            self.t0 += time.perf_counter() - t
        self.best = min(self.best, value)
        if self.every and (len(self.steps) < 2 or step // self.every > self.steps[-2] // self.every):
            print(
                f"  {self.name} step {step}: {self.points[-1][0]:.1f} s, objective {self.points[-1][1]:.4g}", flush=True
            )
        over_time = self.budget_s is not None and self.points[-1][0] >= self.budget_s
        return over_time or (self.max_evals is not None and step >= self.max_evals)

    def fixed_seconds(self, setup_s: float) -> float | None:
        """Return the run's fixed cost: its first evaluation (after `setup_s` of setup) minus a steady one, or None.

        A steady evaluation is the mean over the evaluations after the first two calls (the first traces, the
        second measures), so what is left is tracing and compiling (for lbfgs: `iterate` and its loop).
        """
        if len(self.steps) < 3 or self.steps[-1] <= self.steps[1]:
            return None
        steady = (self.points[-1][0] - self.points[1][0]) / (self.steps[-1] - self.steps[1])
        return self.points[0][0] - setup_s - steady * self.steps[0]

    def seconds_at(self, step: int) -> float:
        """Return the time of evaluation `step` (1-based), interpolated between the calls around it."""
        i = next(i for i, s in enumerate(self.steps) if s >= step)
        t_hi, s_hi = self.points[i][0], self.steps[i]
        t_lo, s_lo = (self.points[i - 1][0], self.steps[i - 1]) if i else (0.0, 0)
        return t_lo + (t_hi - t_lo) * (step - s_lo) / max(s_hi - s_lo, 1)

    def first_time_at_or_below(self, value: float, history: list[float] | None = None) -> float | None:
        """Return the time of the first evaluation whose objective is <= value (verified if verifying), or None."""
        n = self.evals_to(value, history)
        if self.verify is not None:
            return self.reached[1] if self.reached else None
        return None if n is None else self.seconds_at(n)

    def evals_to(self, value: float, history: list[float] | None = None) -> int | None:
        """Return how many evaluations it took to reach `value` (verified if verifying; from `history` if given)."""
        if self.verify is not None:
            return self.reached[0] if self.reached else None
        values = history if history is not None else [v for _, v in self.points]
        return next((i + 1 for i, v in enumerate(values) if v <= value), None)


WARM_EVALS = 20  # evaluations of the warm run when the cold one did not reach the target

LABELS = {
    "adam": "tutorial Adam (lr .02, b1 .99, eps .1)",
    "lbfgs-scipy": "scipy L-BFGS-B (lbfgs-scipy)",
    "lbfgs": "projected L-BFGS in TF (lbfgs)",
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (and JSON lines with --json); the last line is `speedup X.Yx`."""
    p = argparse.ArgumentParser(prog="python -m nst_utils.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized: 128 px and 100 tutorial steps")
    p.add_argument("--size", type=int, help="long side in px (default 512, 128 with --quick)")
    p.add_argument("--baseline-steps", type=int, help="tutorial Adam steps (default 1000, 100 with --quick)")
    p.add_argument(
        "--fast-max-s",
        type=float,
        default=None,
        help="cap each L-BFGS run's wall time (default: the baseline's time, i.e. equal time)",
    )
    p.add_argument(
        "--fast-max-evals", type=int, default=5000, help="cap each L-BFGS run's evaluations (default %(default)s)"
    )
    p.add_argument(
        "--optimizers",
        nargs="+",
        default=["lbfgs-scipy", "lbfgs"],
        choices=["lbfgs-scipy", "lbfgs"],
        help="the L-BFGS runs after the tutorial's (default: both)",
    )
    p.add_argument("--content", default=None, help="content image (default: the package default)")
    p.add_argument("--style", default=None, help="style image (default: the package default)")
    p.add_argument("--every", type=int, default=0, help="print progress every N evaluations (default: never)")
    p.add_argument("--json", action="store_true", help="also print one JSON object per run, one line each")
    p.add_argument("--save", metavar="PREFIX", help="write PREFIX_<optimizer>.png and PREFIX.json")
    args = p.parse_args(argv)
    freeze_heap()  # as the CLI does once TensorFlow is in
    size = args.size or (128 if args.quick else 512)
    steps = args.baseline_steps or (100 if args.quick else 1000)

    default = StyleConfig().optimizer
    base_cfg = StyleConfig(size=size, steps=steps, optimizer="adam", precision="float32")  # the tutorial, as it is
    configs = {o: StyleConfig(size=size, steps=args.fast_max_evals, optimizer=o) for o in args.optimizers}
    objective_fields = (
        "size",
        "alpha",
        "beta",
        "tv",
        "content_layers",
        "style_layers",
        "style_layer_weights",
        "pooling",
        "init",
        "style_scale",
        "style_blend",
        "style_layer_weight_exp",
        "preserve_colors",
    )
    assert all(getattr(c, f) == getattr(base_cfg, f) for c in configs.values() for f in objective_fields), (
        "objectives differ"
    )

    inputs = prepare_inputs(base_cfg, args.content, args.style)
    h, w = inputs.content.shape[:2]
    precision = resolve_precision(StyleConfig().precision)
    print(
        f"benchmark: {w}x{h} px, tutorial Adam {steps} steps (float32) vs {', '.join(args.optimizers)} "
        f"(precision {StyleConfig().precision} -> {precision}; default optimizer {default}); "
        f"TF {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads",
        flush=True,
    )
    n_mm = 1024 if size <= 256 else 2048
    peak = {dt: matmul_peak(n_mm, dtype=dt) for dt in ("float32", "bfloat16")}
    per_eval = conv_gflop(h, w)
    eval_s = {dt: evaluation_seconds(args.content, args.style, size, dt)[0] for dt in {"float32", precision}}
    print(
        f"matmul peak {peak['float32']:.0f} GFLOP/s float32, {peak['bfloat16']:.0f} GFLOP/s bfloat16; "
        f"VGG19 forward + input gradient {per_eval:.1f} GFLOP per evaluation; one value-and-gradient evaluation "
        + ", ".join(f"{1e3 * t:.0f} ms {dt}" for dt, t in sorted(eval_s.items())),
        flush=True,
    )

    # One float32 objective judges everything: the tutorial's run, ours while it runs (bf16 runs are re-checked in
    # float32 near the target, that time left out), and all final images.
    check = build_objective(base_cfg, inputs.content, inputs.styles, inputs.blend)

    def full(img: np.ndarray) -> float:
        return float(tf.reduce_sum(check.loss_terms(tf.constant(img[None], tf.float32))["total"]))

    def cpu_seconds() -> tuple[float, float]:
        """Return this process's (user, system) CPU seconds so far: system time is the allocator's page-fault churn."""
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime, u.ru_stime

    base_clock = Clock(name="tutorial", every=args.every)
    forget_objectives()  # every timed run starts cold, as in a new process (none takes another's traced objective)
    cpu0 = cpu_seconds()
    base = stylize(args.content, args.style, base_cfg, callback=base_clock, progress=False)
    cpu = [b - a for a, b in zip(cpu0, cpu_seconds())]
    base_s = base_clock.points[-1][0]
    base_final = base.best_loss
    print(
        f"tutorial Adam: {base.steps} steps in {base_s:.1f} s, final objective {base_final:.4g}, "
        f"{per_eval * base.steps / base_s:.0f} GFLOP/s, peak memory so far {peak_memory_mb():.0f} MiB",
        flush=True,
    )
    budget = args.fast_max_s if args.fast_max_s is not None else base_s
    rows = [
        dict(
            run="tutorial",
            optimizer="adam",
            precision="float32",
            evals=base.steps,
            seconds=base_s,
            evals_to_target=base_clock.evals_to(base_final),
            seconds_to_target=base_s,
            host_ms_per_eval=optimizer_ms_per_eval("adam", inputs.content.shape),
            final_objective=full(base.image),
            fixed_s=base_clock.fixed_seconds(base.timings["setup_s"]),
            user_s=cpu[0],
            sys_s=cpu[1],
        )
    ]
    images = {"adam": base.image}
    for name, cfg in configs.items():
        clock = Clock(
            budget_s=budget,
            max_evals=args.fast_max_evals,
            name=name,
            every=args.every,
            verify=full if precision != "float32" else None,
            target=base_final,
        )
        forget_objectives()
        cpu0 = cpu_seconds()
        r = stylize(args.content, args.style, cfg, callback=clock, progress=False)
        cpu = [b - a for a, b in zip(cpu0, cpu_seconds())]
        images[name] = r.image
        hist = r.history["total"]
        rows.append(
            dict(
                run="equal time" if budget >= base_s else f"{budget:.0f} s cap",
                optimizer=name,
                precision=precision,
                evals=r.steps,
                seconds=clock.points[-1][0],
                evals_to_target=clock.evals_to(base_final, hist),
                seconds_to_target=clock.first_time_at_or_below(base_final, hist),
                host_ms_per_eval=optimizer_ms_per_eval(name, inputs.content.shape),
                final_objective=full(r.image),
                fixed_s=clock.fixed_seconds(r.timings["setup_s"]),
                user_s=cpu[0],
                sys_s=cpu[1],
            )
        )
        row = rows[-1]
        print(
            f"{name}: {r.steps} evaluations in {row['seconds']:.1f} s (budget {budget:.0f} s), final objective "
            f"{row['final_objective']:.4g}, host {row['host_ms_per_eval']:.1f} ms per evaluation, "
            f"{per_eval * r.steps / row['seconds']:.0f} GFLOP/s",
            flush=True,
        )
    for name, cfg in configs.items():  # a later run in this process takes the kept objective (and its L-BFGS)
        row = next(row for row in rows if row["optimizer"] == name)
        reached = row["seconds_to_target"]  # run warm to the target too (twice the cold time), else WARM_EVALS
        clock = Clock(
            budget_s=2 * reached if reached else None,
            name=name,
            verify=full if precision != "float32" else None,
            target=base_final,
        )
        steps = args.fast_max_evals if reached else WARM_EVALS
        r = stylize(args.content, args.style, cfg.replace(steps=steps), callback=clock, progress=False)
        row["warm_fixed_s"] = clock.fixed_seconds(r.timings["setup_s"])
        row["warm_seconds_to_target"] = clock.first_time_at_or_below(base_final, r.history["total"])
    for dt in peak:  # again at the end: the best of both (load varies)
        peak[dt] = max(peak[dt], matmul_peak(n_mm, dtype=dt))

    print()
    print(
        "| run | size | evals to tutorial's objective | s to it | evals | wall s | objective (float32) | host ms/eval "
        "| fixed s | user s | sys s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        reach = "not reached" if row["evals_to_target"] is None else f"{row['evals_to_target']}"
        secs = "-" if row["seconds_to_target"] is None else f"{row['seconds_to_target']:.1f}"
        fixed = "-" if row["fixed_s"] is None else f"{row['fixed_s']:.1f}"
        print(
            f"| {LABELS[row['optimizer']]}, {row['run']} | {w}x{h} | {reach} | {secs} | {row['evals']} | "
            f"{row['seconds']:.1f} | {row['final_objective']:.4g} | {row['host_ms_per_eval']:.1f} | {fixed} | "
            f"{row['user_s']:.1f} | {row['sys_s']:.1f} |"
        )
    print(
        "fixed cost (first evaluation minus a steady one, after setup): "
        + ", ".join(f"{row['optimizer']} {row['fixed_s']:.1f} s" for row in rows if row["fixed_s"] is not None)
    )
    print(
        "fixed cost of a later run in the same process (a notebook's; the objective kept, traced): "
        + ", ".join(f"{r['optimizer']} {r['warm_fixed_s']:.2f} s" for r in rows if r.get("warm_fixed_s") is not None)
    )
    print(
        "CPU seconds, user / system (system: page faults and zeroing): "
        + ", ".join(f"{row['optimizer']} {row['user_s']:.1f} / {row['sys_s']:.1f}" for row in rows)
    )
    print()
    print(f"baseline time {base_s:.1f} s, final objective {base_final:.4g}")
    for row in rows[1:]:
        t = row["seconds_to_target"]
        print(
            f"{row['optimizer']}: "
            + (
                f"not reached in {row['seconds']:.1f} s"
                if t is None
                else f"time to baseline quality {t:.1f} s (speedup {base_s / t:.2f}x), "
                f"{row['evals_to_target']} evaluations "
                f"(tutorial {base.steps}, ratio {base.steps / row['evals_to_target']:.2f})"
            )
        )
        warm = row.get("warm_seconds_to_target")
        if warm:
            print(f"{row['optimizer']}, warm (a later run in this process): {warm:.1f} s ({base_s / warm:.2f}x)")
    print(f"peak memory {peak_memory_mb():.0f} MiB (whole process)")
    print(f"matmul peak at the end {peak['float32']:.0f} GFLOP/s float32, {peak['bfloat16']:.0f} bfloat16")
    if args.json:
        for row in rows:
            print(json.dumps({**row, "size": [w, h]}))
    if args.save:
        for name, img in images.items():
            save_image(img, f"{args.save}_{name}.png")
        write_text(
            json.dumps(
                {
                    "size": [w, h],
                    "precision": precision,
                    "rows": rows,
                    "peak_gflops": peak,
                    "gflop_per_eval": per_eval,
                    "eval_seconds": eval_s,
                    "peak_mb": peak_memory_mb(),
                }
            ),
            f"{args.save}.json",
        )
    ours = next((row for row in rows if row["optimizer"] == default), None)
    reach = ours["seconds_to_target"] if ours else None
    print(f"speedup {base_s / reach if reach else 0.0:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

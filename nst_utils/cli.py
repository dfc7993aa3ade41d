"""The `nst` command: stylize, sweep, fetch, info. Errors print one line (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

from . import ALLOCATOR_ENV, ALLOCATOR_SET_BY_US, data, weights
from .config import (
    CONTENT_LAYERS, GRID_RATIOS, INITS, OPTIMIZERS, PRESERVE_COLORS, RAW_GRID_RATIOS, STYLE_LAYERS, StyleConfig,
    network_defaults,
)
from .errors import NSTError
from .checkpoint import checkpoint_path
from .images import check_output, save_image, write_text
from .progress import Writes, check_outputs
from .quiet import import_tensorflow
from .vgg import PRECISIONS

# Only argparse-level modules above (no TensorFlow, h5py or matplotlib): `nst --help` and argument errors answer
# at once. Each command imports the engine inside its function, the documented exception to module-level imports.

EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143  # 128 + SIGINT / SIGTERM


def _positive_int(text: str) -> int:
    """Return `text` as an integer > 0 (argparse type)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _weight(text: str) -> float:
    """Return `text` as a finite float >= 0 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def _positive_float(text: str) -> float:
    """Return `text` as a finite float > 0 (argparse type)."""
    v = _weight(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be > 0, got 0")
    return v


def add_control_args(s: argparse.ArgumentParser) -> None:
    """Add the control flags (several styles, colour, scale, layer weights, progress, resume, mask) to `s`."""
    g = s.add_argument_group("controls")
    g.add_argument("--style", dest="styles", nargs="+", metavar="STYLE", help="one or more style images (instead of the positional STYLE)")
    g.add_argument("--style-blend", nargs="+", type=_weight, metavar="W", help="one blend weight per style image (normalised; default equal)")
    g.add_argument("--preserve-colors", choices=PRESERVE_COLORS, help="keep the content's colours: luminance-only transfer, or match the style's colour histogram (mean/covariance) to the content first")
    g.add_argument("--style-scale", type=_positive_float, default=1.0, help="style images' long side relative to --size (default: %(default)s)")
    g.add_argument("--style-layer-weight-exp", type=_positive_float, metavar="E", help="weigh style layer i by E**i (normalised); E > 1 favours deep layers")
    g.add_argument("--style-mask", metavar="MASK", help="grey mask image: style 1 where white, style 2 where black (one style: styled only where white)")
    g.add_argument("--save-every", type=_positive_int, metavar="N", help="write the current image every N steps next to the output (OUT_0010.png)")
    g.add_argument("--plot", metavar="LOSSES.png", help="write a plot of each loss term per step at the end")
    g.add_argument("--checkpoint", metavar="CKPT.npz", help="where Ctrl-C writes the run's checkpoint (default: OUT.ckpt.npz beside the output)")
    g.add_argument("--resume", metavar="CKPT.npz", help="continue an interrupted run from its checkpoint (its images and settings; --steps sets the new total)")


GIVEN = "given_options"  # the namespace attribute holding the dests of the options typed on the command line
FLAG_OF = {"learning_rate": "lr"}  # StyleConfig fields whose `nst stylize` option has another dest


class _Store(argparse.Action):
    """argparse's store action that also records, in the namespace, that the option was typed (not defaulted)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values, option_string=None) -> None:
        """Store `values`; add this option's dest to the namespace's set of given options."""
        setattr(namespace, self.dest, values)
        if option_string is not None:
            setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})


class _Switch(argparse.BooleanOptionalAction):
    """argparse's --flag / --no-flag action that also records, like `_Store`, that the option was typed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values, option_string=None) -> None:
        """Set the flag from the option's spelling; add its dest to the namespace's set of given options."""
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})


def add_weight_args(s: argparse.ArgumentParser, normalized: bool, plain: dict, norm: dict,
                    weights: tuple[str, ...] = ("alpha", "beta", "tv")) -> None:
    """Add --normalize-vgg / --no-normalize-vgg (default `normalized`), --pooling and the loss `weights` to `s`.

    Unset weights and pooling come from the chosen network (see `weight_settings`): `norm` for the normalised
    VGG19, `plain` otherwise (config.network_defaults).
    """
    s.add_argument("--normalize-vgg", action=_Switch, default=normalized,
                   help="Gatys et al.'s VGG19: every channel divided by its mean activation over the registry's six "
                        "images (factors computed once and cached); also switches the defaults of --pooling, --alpha, "
                        "--beta and --tv (default: %(default)s)")
    what = {"alpha": "content weight", "beta": "style weight", "tv": "total variation weight"}
    for name in weights:
        s.add_argument(f"--{name}", type=_weight, help=f"{what[name]} (default: {plain[name]:g}; "
                                                        f"{norm[name]:g} with --normalize-vgg)")
    s.add_argument("--pooling", choices=("max", "avg"), help=f"VGG19 pooling (default: {plain['pooling']}; "
                                                             f"{norm['pooling']} with --normalize-vgg)")


def weight_settings(args: argparse.Namespace, defaults: dict) -> dict:
    """Return the network's StyleConfig fields: the flags given over `defaults` (config.network_defaults)."""
    given = {k: getattr(args, k, None) for k in ("alpha", "beta", "tv", "pooling")}
    return defaults | {k: v for k, v in given.items() if v is not None} | {"normalize_vgg": args.normalize_vgg}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block) with exit code 2, recording given options."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in (None, "store"):  # every plain option records that it was given (see GIVEN)
            self.register("action", name, _Store)

    def error(self, message: str) -> None:
        """Print one line saying what is wrong and where to look, then exit 2 (never returns)."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for `nst`."""
    d = StyleConfig.__dataclass_fields__
    p = _Parser(prog="nst", description="Neural style transfer (Gatys et al. 2015) with VGG19.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    debug = argparse.ArgumentParser(add_help=False)  # so `nst stylize ... --debug` works too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stylize", parents=[debug], help="restyle a content image like a style image",
                       description="Restyle CONTENT like STYLE. With no images, uses the two default images.")
    s.add_argument("content", nargs="?", help="content image path or registry name (default: japanese_garden.jpg)")
    s.add_argument("style", nargs="?", help="style image path or registry name (default: picasso_selfportrait.jpg)")
    s.add_argument("-o", "--output", default="result.png", help="output PNG path (default: %(default)s)")
    s.add_argument("--size", type=_positive_int, default=d["size"].default, help="long side of the output in px (default: %(default)s)")
    s.add_argument("--steps", type=_positive_int, default=d["steps"].default, help="loss evaluations / optimiser steps (default: %(default)s)")
    s.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"].default,
                   help="lbfgs: projected L-BFGS in TensorFlow (on the GPU if there is one); lbfgs-scipy: scipy's "
                        "L-BFGS-B on the host, the reference; adam: the TensorFlow tutorial's (default: %(default)s)")
    s.add_argument("--tol", type=float, default=None, metavar="TOL",
                   help="stop early when the objective falls by less than TOL (relative) over 20 evaluations (default: off)")
    plain, norm = network_defaults(False), network_defaults(True)
    add_weight_args(s, False, plain, norm)
    s.add_argument("--content-layers", nargs="+", default=list(CONTENT_LAYERS), metavar="LAYER", help="default: %(default)s")
    s.add_argument("--style-layers", nargs="+", default=list(STYLE_LAYERS), metavar="LAYER", help="default: %(default)s")
    s.add_argument("--style-layer-weights", nargs="+", type=_weight, metavar="W", help="one weight per style layer (normalised)")
    s.add_argument("--init", choices=INITS, default=d["init"].default, help="starting image (default: %(default)s)")
    s.add_argument("--seed", type=int, default=d["seed"].default, help="random seed (default: %(default)s)")
    s.add_argument("--precision", choices=PRECISIONS, default=d["precision"].default,
                   help="VGG19 convolutions in float32 or bfloat16; auto: bfloat16 where a probe shows it faster (default: %(default)s)")
    s.add_argument("--lr", type=_weight, default=d["learning_rate"].default, help="Adam learning rate (default: %(default)s)")
    s.add_argument("--weights", help="path to the VGG19 notop h5 file (default: $NST_VGG19_WEIGHTS, then the Keras cache, then download)")
    s.add_argument("--log", metavar="HISTORY.json", help="write the config, timings and each loss term per step as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_control_args(s)

    f = sub.add_parser("fetch", parents=[debug], help="download the default images and the VGG19 weights for offline use")
    f.add_argument("--all", action="store_true", help="fetch every image in the registry, not just the defaults")
    f.add_argument("--weights", help="use this weights file instead of downloading (checked by md5)")

    sub.add_parser("info", parents=[debug], help="show where the weights and images come from, TensorFlow version and devices")

    w = sub.add_parser("sweep", parents=[debug], help="stylize one batch over several beta/alpha ratios (and style-layer sets)",
                       description="One batched run: every beta/alpha ratio (columns) for every style-layer set (rows), "
                                   "targets computed once; writes a labelled grid and each image.")
    w.add_argument("content", nargs="?", help="content image (default: japanese_garden.jpg)")
    w.add_argument("style", nargs="?", help="style image (default: picasso_selfportrait.jpg)")
    w.add_argument("--ratios", nargs="+", type=_weight, metavar="R",
                   help=f"beta/alpha ratios, one column each (default: {' '.join(map(format, GRID_RATIOS, ['g'] * 4))}; "
                        f"without --normalize-vgg {' '.join(map(format, RAW_GRID_RATIOS, ['g'] * 4))})")
    w.add_argument("--cumulative-layers", action="store_true",
                   help="one row per growing set of style layers (first layer, +second, ...), as Gatys et al. Fig. 3")
    w.add_argument("-o", "--output", default="sweep.png", help="grid figure PNG (default: %(default)s)")
    w.add_argument("--save-dir", help="also write each image here as r<row>_c<column>.png")
    w.add_argument("--size", type=_positive_int, default=256, help="long side in px (default: %(default)s)")
    w.add_argument("--steps", type=_positive_int, default=100, help="loss evaluations (default: %(default)s)")
    w.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"].default,
                   help="lbfgs (batched, TensorFlow) or adam; lbfgs-scipy runs the images one at a time (default: %(default)s)")
    add_weight_args(w, True, plain, norm, ("alpha", "tv"))  # a sweep's betas come from --ratios
    w.add_argument("--style-layers", nargs="+", default=list(STYLE_LAYERS), metavar="LAYER", help="default: %(default)s")
    w.add_argument("--weights", help="path to the VGG19 notop h5 file")
    w.add_argument("--precision", choices=PRECISIONS, default=d["precision"].default, help="default: %(default)s")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


CLI_FLAGS = {"output": "--output", "plot": "--plot", "checkpoint": "--checkpoint", "log": "--log",
             "save_every": "--output (or --save-every)"}  # the option each output comes from, for check_outputs


def report_failed_writes(writes: Writes) -> bool:
    """Return True after printing one line (what could not be written, why, where it went) if any write failed."""
    if writes.failed:
        print(f"nst: error: {writes.message()}", file=sys.stderr)
    return bool(writes.failed)


def peak_memory_mb() -> float:
    """Return this process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cmd_stylize(args: argparse.Namespace) -> int:
    """Run one stylization from the command line; return the exit code."""

    t0 = time.perf_counter()
    config_kwargs = dict(size=args.size, steps=args.steps, optimizer=args.optimizer,
                         **weight_settings(args, network_defaults(args.normalize_vgg)),
                         content_layers=tuple(args.content_layers), style_layers=tuple(args.style_layers),
                         style_layer_weights=tuple(args.style_layer_weights) if args.style_layer_weights else None,
                         init=args.init, seed=args.seed, learning_rate=args.lr, precision=args.precision,
                         tol=args.tol, style_blend=tuple(args.style_blend) if args.style_blend else None, style_scale=args.style_scale,
                         style_layer_weight_exp=args.style_layer_weight_exp, preserve_colors=args.preserve_colors)
    config = None if args.resume else StyleConfig(**config_kwargs)  # resuming: the checkpoint's
    out = Path(args.output)
    check_outputs(output=out, save_every=args.save_every, plot=args.plot, log=args.log,
                  checkpoint=args.checkpoint or checkpoint_path(out), flags=CLI_FLAGS)  # before any work
    if args.styles and args.style:
        raise NSTError("give the style images either positionally or with --style, not both")
    controls = dict(output=out, save_every=args.save_every, plot=args.plot, checkpoint=args.checkpoint)
    import_tensorflow()
    from .optimize import stylize  # the engine (TensorFlow): only once the arguments are checked
    if args.resume:
        if args.content or args.style or args.styles or args.style_mask:
            raise NSTError("--resume continues the checkpoint's own images; give no content, style or mask")
        given = getattr(args, GIVEN, frozenset())  # every config flag typed is applied or refused, never dropped
        overrides = {name: value for name, value in config_kwargs.items() if FLAG_OF.get(name, name) in given}
        result = stylize(progress=not args.quiet, weights=args.weights, resume=args.resume, callback=INTERRUPTS.check,
                         during_run=INTERRUPTS.deferred(), **controls, **overrides)
        config = result.config
    else:
        result = stylize(args.content, args.styles or args.style, config, progress=not args.quiet, weights=args.weights,
                         style_mask=args.style_mask, callback=INTERRUPTS.check, during_run=INTERRUPTS.deferred(),
                         **controls)
    if args.log:
        result.writes("the log", write_text, json.dumps({"config": config.to_dict(), "timings": result.timings,
                                                         "best_loss": result.best_loss, "interrupted": result.interrupted,
                                                         "message": result.message, "history": result.history}, indent=1),
                      args.log)
    if report_failed_writes(result.writes):
        return EXIT_INTERRUPTED if result.interrupted else EXIT_ERROR
    h, w = result.image.shape[:2]
    wall = time.perf_counter() - t0
    print(f"wrote {out} ({w}x{h}) after {result.steps} steps, loss {result.best_loss:.4g}, "
          f"{wall:.1f} s, peak memory {peak_memory_mb():.0f} MiB")
    if result.message:
        print(f"nst: {result.message}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 1 if result.message.startswith("loss became") else 0


def _cell_name(i: int, cols: int) -> str:
    """Return the file name of a sweep's i-th image in a grid of `cols` columns (r<row>_c<column>.png)."""
    return f"r{i // cols}_c{i % cols}.png"


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a batched sweep from the command line and write its grid; return the exit code."""
    out = check_output(args.output, flag="--output")
    config = StyleConfig(size=args.size, steps=args.steps, optimizer=args.optimizer,
                         **weight_settings(args, network_defaults(args.normalize_vgg)),
                         style_layers=tuple(args.style_layers), precision=args.precision)
    import_tensorflow()
    from .plots import cumulative_labels, save_figure, sweep_grid  # matplotlib and the engine: once the arguments are checked
    from .sweep import cumulative_layer_weights, grid_settings, sweep
    ratios = args.ratios or (GRID_RATIOS if config.normalize_vgg else RAW_GRID_RATIOS)
    n, cols = len(config.style_layers), len(ratios)
    rows = cumulative_layer_weights(n) if args.cumulative_layers else [(1.0,) * n]
    if args.save_dir:
        for i in range(len(rows) * cols):
            check_output(Path(args.save_dir) / _cell_name(i, cols), flag="--save-dir")
    results = sweep(args.content, args.style, config, grid_settings(rows, ratios, config.alpha),
                    progress=not args.quiet, weights=args.weights, callback=INTERRUPTS.check,
                    during_run=INTERRUPTS.deferred())
    labels = cumulative_labels(config.style_layers) if args.cumulative_layers else ["all style layers"]
    fig = sweep_grid(results, ratios, labels,
                     title=f"{len(results)} images from one batched run ({args.steps} {args.optimizer} steps)",
                     ylabel="style layers" if args.cumulative_layers else None)
    writes = Writes()
    writes("the grid", save_figure, fig, out)
    if args.save_dir:
        for i, r in enumerate(results):
            writes(_cell_name(i, cols), save_image, r.image, Path(args.save_dir) / _cell_name(i, cols))
    if report_failed_writes(writes):
        return EXIT_ERROR
    print(f"wrote {out}: {len(rows)} x {cols} images in {results[0].timings['total_s']:.1f} s, "
          f"peak memory {peak_memory_mb():.0f} MiB")
    return EXIT_INTERRUPTED if results[0].interrupted else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download (or verify) the images and weights; return the exit code."""
    names = data.known_images() if args.all else list(data.default_images())
    for name in names:
        print(f"{name}: {data.image_path(name)}")
    print(f"VGG19 weights: {weights.resolve(args.weights)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print where things resolve from and what TensorFlow sees; return the exit code."""
    print(f"VGG19 weights: {weights.describe()}")
    print(f"NST_DATA_DIR: {os.environ.get(data.DATA_DIR_ENV, '(unset)')}; download cache: {data.cache_dir()}")
    for name in data.known_images():
        try:
            where = data.image_path(name, download=False)
        except NSTError:
            where = "(not downloaded; `nst fetch --all`)"
        print(f"  {name}: {where}")
    import_tensorflow()
    from .model import describe_devices, resolve_precision  # TensorFlow: only once the command runs

    print(f"{describe_devices()}; Python {sys.version.split()[0]}")
    print(f"CPU allocator: {cpu_allocator()}")
    print(f"precision auto -> {resolve_precision('auto')} (bfloat16 where a probe convolution runs >= 1.3x faster in it)")
    return 0


def cpu_allocator() -> str:
    """Return which CPU allocator TensorFlow uses in this process and who chose it, in words."""
    value = os.environ.get(ALLOCATOR_ENV, "")
    pooled = value.strip().lower() in ("1", "true")
    what = "TensorFlow's pooling BFC allocator" if pooled else \
        "TensorFlow's default (oneDNN's pool where oneDNN is on, else malloc: large buffers go back to the OS each step)"
    who = "nst_utils' default" if ALLOCATOR_SET_BY_US else "your setting"
    return f"{what} ({ALLOCATOR_ENV}={value}, {who})"


class Interrupts:
    """Ctrl-C (SIGINT) and `kill` (SIGTERM): at once, except while the optimiser runs, where they stop the run at its
    next progress callback (between compiled calls), so it keeps its best image and writes its checkpoint.

    A KeyboardInterrupt raised at an arbitrary point inside a compiled TensorFlow call can leave it hanging; raised
    from the callback, the run stops cleanly. Before the first evaluation (reading inputs, a download, building the
    network) and after the last (writing outputs) there is nothing to keep: the signal stops `nst` at once, and an
    output being written is left as it was (atomic writes). A second signal always stops at once.
    """

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.deferring = False

    def handler(self, signum: int, frame) -> None:
        """Note the signal; raise KeyboardInterrupt now unless a run is between compiled calls (and it is the first)."""
        self.signals.append(signum)
        if not self.deferring or len(self.signals) > 1:
            raise KeyboardInterrupt
        print("\nnst: stopping after the current step (press Ctrl-C again to stop at once)", file=sys.stderr)

    @contextlib.contextmanager
    def deferred(self):
        """Return a context (for stylize's `during_run`) inside which a first signal waits for the next callback."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.signals:  # a signal during the last call, which then ended: stop as the callback would have
            raise KeyboardInterrupt

    def check(self, *progress) -> None:
        """A stylize/sweep callback: raise KeyboardInterrupt if a signal is pending."""
        if self.signals:
            raise KeyboardInterrupt

    @property
    def terminated(self) -> bool:
        """Return True if a SIGTERM arrived."""
        return signal.SIGTERM in self.signals


INTERRUPTS = Interrupts()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nst`; return the process exit code (or, after a signal, exit at once with it)."""
    args = build_parser().parse_args(argv)
    command = {"stylize": cmd_stylize, "sweep": cmd_sweep, "fetch": cmd_fetch, "info": cmd_info}[args.command]
    INTERRUPTS.signals.clear()
    INTERRUPTS.deferring = False
    old_handlers = {sig: signal.signal(sig, INTERRUPTS.handler) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        code = _run(command, args)
    finally:
        for sig, old in old_handlers.items():
            signal.signal(sig, old)
    if INTERRUPTS.signals and old_handlers:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Exit the process with `code` at once (never returns), without TensorFlow's seconds of interpreter shutdown.

    Only after a signal, when every output has been written or left as it was: a job scheduler's one SIGTERM gets
    an exit within its grace period.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run(command, args: argparse.Namespace) -> int:
    """Return the exit code of `command(args)`, every failure turned into one line on stderr."""
    try:
        code = command(args)
        return EXIT_TERMINATED if INTERRUPTS.terminated and code == EXIT_INTERRUPTED else code
    except NSTError as exc:
        if args.debug:
            raise
        print(f"nst: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("nst: interrupted" + (" (SIGTERM)" if INTERRUPTS.terminated else ""), file=sys.stderr)
        return EXIT_TERMINATED if INTERRUPTS.terminated else EXIT_INTERRUPTED
    except MemoryError:
        if args.debug:
            raise
        print("nst: error: out of memory; try a smaller --size", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # TensorFlow's out-of-memory (GPU or host allocator) is a user problem too
        if args.debug or type(exc).__name__ != "ResourceExhaustedError":
            raise
        print(f"nst: error: out of memory ({str(exc).splitlines()[0][:120]}); try a smaller --size", file=sys.stderr)
        return EXIT_ERROR

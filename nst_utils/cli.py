"""The `nst` command: stylize, sweep, fetch, info. Errors print one line (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import ALLOCATOR_ENV, ALLOCATOR_SET_BY_US, assets, memory
from .checkpoint import checkpoint_path
from .config import GRID_RATIOS, NORMALIZED, RAW_GRID_RATIOS, NSTError, StyleConfig, network_defaults
from .flow import PRESETS as FLOW_PRESETS
from .flow import require_video
from .host import import_tensorflow, peak_memory_mb
from .outputs import Writes, check_aliases, check_output, check_outputs, input_files, save_image, write_text

# Only argparse-level modules above (no TensorFlow, h5py or matplotlib): `nst --help` and argument errors answer
# at once. Each command imports the engine inside its function, the documented exception to module-level imports.

EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143  # 128 + SIGINT / SIGTERM (SIGHUP: 129)
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)  # each keeps the run's best image and checkpoint (Interrupts); SIGHUP: the terminal closed, an ssh session dropped


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


def _scale(text: str) -> int | None:
    """Return `text` as a long side in px > 0, or None for "none" (single scale) (argparse type of --scales)."""
    return None if text.strip().lower() == "none" else _positive_int(text)


KINDS = {"positive_int": _positive_int, "weight": _weight, "positive_float": _positive_float, "scale": _scale}
TYPES = {"int": int, "float": float, "str": str}
SWEEP_DEFAULTS = {"size": 256, "steps": 100, "normalize_vgg": True}  # where `nst sweep` starts instead


def config_fields(command: str) -> list[dataclasses.Field]:
    """Return the StyleConfig fields that are options of `nst <command>` ("stylize" or "sweep")."""
    return [f for f in dataclasses.fields(StyleConfig) if f.metadata and (command == "stylize" or f.metadata["sweep"])]


def _shown(value) -> str:
    """Return a default as the help shows it: tuples space-separated, floats as %g."""
    if isinstance(value, tuple):
        return " ".join(map(_shown, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default_help(f: dataclasses.Field, defaults: dict) -> str:
    """Return the " (default: ...)" a field's help ends with ("" if its help says it already, or it has none)."""
    normalized = defaults.get("normalize_vgg", False)
    if f.name in NORMALIZED and f.name != "normalize_vgg":  # the chosen network decides these defaults
        here, there = network_defaults(normalized)[f.name], network_defaults(not normalized)[f.name]
        return f" (default: {_shown(here)}; {_shown(there)} with --{'no-' if normalized else ''}normalize-vgg)"
    value = defaults.get(f.name, f.default)
    return "" if value is None or "default" in f.metadata["help"] else f" (default: {_shown(value)})"


def add_config_options(parser: argparse.ArgumentParser, command: str, defaults: dict) -> dict:
    """Add one option per StyleConfig field of `command`, made from the field's annotation, default and metadata;
    return the help groups made on the way ({title: group}).

    Each defaults to argparse.SUPPRESS, so a parsed namespace shows what was typed (`_Parser.parse_known_args` then
    fills in the rest); `defaults` are the command's starting values where they differ from StyleConfig's.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in config_fields(command):
        m = f.metadata
        group = m["group"]
        if group is not None and group not in groups:
            groups[group] = parser.add_argument_group(group)
        kw = {"dest": f.name, "default": argparse.SUPPRESS, "help": m["help"] + _default_help(f, defaults)}
        base = f.type.replace(" | None", "")
        if base == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            many = base.startswith("tuple[")
            kw["type"] = (
                KINDS[m["kind"]] if m["kind"] else TYPES[base[len("tuple[") : -len(", ...]")] if many else base]
            )
            kw |= {"nargs": "+"} if many else {}
            kw |= {"choices": m["choices"]} if m["choices"] else {}
            kw |= {"metavar": m["metavar"]} if m["metavar"] else {}
        (groups[group] if group else parser).add_argument("--" + f.name.replace("_", "-"), *m["aliases"], **kw)
    return groups


def weight_settings(args: argparse.Namespace, defaults: dict) -> dict:
    """Return the network's StyleConfig fields: the flags given over `defaults` (config.network_defaults)."""
    given = {k: getattr(args, k, None) for k in ("alpha", "beta", "tv", "pooling")}
    return defaults | {k: v for k, v in given.items() if v is not None} | {"normalize_vgg": args.normalize_vgg}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block) with exit code 2.

    On a config command (`config_command` set: "stylize" or "sweep") the parsed namespace holds `typed`, the
    StyleConfig fields typed on the command line, and `settings`, every field the command sets (typed, else the
    chosen network's or the command's default), each also as an attribute.
    """

    config_command: str | None = None
    config_defaults: dict = {}

    def parse_known_args(self, args=None, namespace=None):
        """Parse as argparse does; on a config command, record the typed config fields and fill in the others."""
        ns, extras = super().parse_known_args(args, namespace)
        if self.config_command is not None:
            fields = config_fields(self.config_command)
            ns.typed = {
                f.name: tuple(getattr(ns, f.name)) if f.type.startswith("tuple[") else getattr(ns, f.name)
                for f in fields
                if hasattr(ns, f.name)
            }
            ns.normalize_vgg = ns.typed.get("normalize_vgg", self.config_defaults.get("normalize_vgg", False))
            ns.settings = (
                {f.name: self.config_defaults.get(f.name, f.default) for f in fields}
                | weight_settings(ns, network_defaults(ns.normalize_vgg))
                | ns.typed
            )
            for name, value in ns.settings.items():
                setattr(ns, name, value)
        return ns, extras

    def error(self, message: str) -> None:
        """Print one line saying what is wrong and where to look, then exit 2 (never returns)."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for `nst`: the config options of `stylize` and `sweep` made from StyleConfig."""
    p = _Parser(prog="nst", description="Neural style transfer (Gatys et al. 2015) with VGG19.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    debug = argparse.ArgumentParser(add_help=False)  # so `nst stylize ... --debug` works too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "stylize",
        parents=[debug],
        help="restyle a content image like a style image",
        description="Restyle CONTENT like STYLE. With no images, uses the two default images.",
    )
    s.config_command = "stylize"
    s.add_argument("content", nargs="?", help="content image path or registry name (default: japanese_garden.jpg)")
    s.add_argument("style", nargs="?", help="style image path or registry name (default: picasso_selfportrait.jpg)")
    s.add_argument("-o", "--output", default="result.png", help="output PNG path (default: %(default)s)")
    s.add_argument(
        "--weights",
        help="path to the VGG19 notop h5 file (default: $NST_VGG19_WEIGHTS, then the Keras cache, then download)",
    )
    s.add_argument(
        "--log", metavar="HISTORY.json", help="write the config, timings and each loss term per step as JSON"
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g = add_config_options(s, "stylize", {})["controls"]
    g.add_argument(
        "--style",
        dest="styles",
        nargs="+",
        metavar="STYLE",
        help="one or more style images (instead of the positional STYLE)",
    )
    g.add_argument(
        "--style-mask",
        metavar="MASK",
        help="grey mask image: style 1 where white, style 2 where black (one style: styled only where white)",
    )
    g.add_argument(
        "--save-every",
        type=_positive_int,
        metavar="N",
        help="write the current image every N steps next to the output (OUT_0010.png)",
    )
    g.add_argument("--plot", metavar="LOSSES.png", help="write a plot of each loss term per step at the end")
    g.add_argument(
        "--checkpoint",
        metavar="CKPT.npz",
        help="where Ctrl-C writes the run's checkpoint (default: OUT.ckpt.npz beside the output)",
    )
    g.add_argument(
        "--resume",
        metavar="CKPT.npz",
        help="continue an interrupted run from its checkpoint (its images and settings; --steps sets the new total)",
    )

    f = sub.add_parser(
        "fetch", parents=[debug], help="download the default images and the VGG19 weights for offline use"
    )
    f.add_argument("--all", action="store_true", help="fetch every image in the registry, not just the defaults")
    f.add_argument("--weights", help="use this weights file instead of downloading (checked by md5)")

    sub.add_parser(
        "info", parents=[debug], help="show where the weights and images come from, TensorFlow version and devices"
    )

    w = sub.add_parser(
        "sweep",
        parents=[debug],
        help="stylize one batch over several beta/alpha ratios (and style-layer sets)",
        description="One batched run: every beta/alpha ratio (columns) for every style-layer set (rows), "
        "targets computed once; writes a labelled grid and each image.",
    )
    w.config_command, w.config_defaults = "sweep", SWEEP_DEFAULTS
    w.add_argument("content", nargs="?", help="content image (default: japanese_garden.jpg)")
    w.add_argument("style", nargs="?", help="style image (default: picasso_selfportrait.jpg)")
    w.add_argument(
        "--ratios",
        nargs="+",
        type=_weight,
        metavar="R",
        help=f"beta/alpha ratios, one column each (default: {_shown(GRID_RATIOS)}; "
        f"without --normalize-vgg {_shown(RAW_GRID_RATIOS)})",
    )
    w.add_argument(
        "--cumulative-layers",
        action="store_true",
        help="one row per growing set of style layers (first layer, +second, ...), as Gatys et al. Fig. 3",
    )
    w.add_argument("-o", "--output", default="sweep.png", help="grid figure PNG (default: %(default)s)")
    w.add_argument("--save-dir", help="also write each image here as r<row>_c<column>.png")
    w.add_argument("--weights", help="path to the VGG19 notop h5 file")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_options(w, "sweep", SWEEP_DEFAULTS)  # a sweep's betas come from --ratios
    add_video_parser(sub, debug)
    return p


def add_video_parser(sub, debug: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Return the `nst video` parser, added to `sub`: stylize's config options plus the video's own."""
    v = sub.add_parser(
        "video",
        parents=[debug],
        help="restyle every frame of a video (or a folder of frames) without flicker",
        description="Restyle each frame of INPUT like STYLE. Frame 1 as `nst stylize` would; each later frame starts "
        "from the previous result warped by the optical flow, with a temporal loss towards it (Ruder et al. 2016). "
        "Finished frames are kept as they finish: after Ctrl-C, the same command continues after the last one.",
    )
    v.config_command = "stylize"
    v.add_argument("input", help="a folder of frames or a video file (.mp4, .webm, .mov, .avi, .gif)")
    v.add_argument("style", nargs="?", help="style image path or registry name (default: picasso_selfportrait.jpg)")
    v.add_argument(
        "-o",
        "--output",
        required=True,
        help="a folder of frames (frame_00001.png, ...) or a video file (.mp4, .mov, .webm, .gif) at INPUT's frame "
        "rate; a video's frames are kept in OUTPUT.frames/ until it is written",
    )
    v.add_argument("--weights", help="path to the VGG19 notop h5 file")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_options(v, "stylize", {})  # --steps: frame 1's evaluations (and each frame's with --independent)
    g = v.add_argument_group("video")
    g.add_argument(
        "--independent",
        action="store_true",
        help="stylize each frame alone from its own content with --steps (flickers: the baseline)",
    )
    g.add_argument(
        "--temporal-weight",
        type=_weight,
        metavar="W",
        help="weight of the temporal loss towards the previous frame warped by the flow; 0: warm start only "
        "(default: 1e5 x --alpha; 100 x --alpha with --normalize-vgg)",  # video.TEMPORAL_PER_ALPHA
    )
    g.add_argument(
        "--frame-steps",
        type=_positive_int,
        metavar="N",
        help="loss evaluations for each frame after the first, which starts from the previous one (default: 100)",
    )
    g.add_argument(
        "--flow",
        choices=FLOW_PRESETS,
        default="medium",
        help="optical-flow preset (DIS), fastest first (default: %(default)s)",
    )
    g.add_argument("--fps", type=_positive_float, default=24.0, help="frame rate of a folder of frames (default: 24)")
    return v


CLI_FLAGS = {
    "output": "--output",
    "plot": "--plot",
    "checkpoint": "--checkpoint",
    "log": "--log",
    "save_every": "--output (or --save-every)",
}  # the option each output comes from, for check_outputs


def report_failed_writes(writes: Writes) -> bool:
    """Return True after printing one line (what could not be written, why, where it went) if any write failed."""
    if writes.failed:
        print(f"nst: error: {writes.message()}", file=sys.stderr)
    return bool(writes.failed)


def cmd_stylize(args: argparse.Namespace) -> int:
    """Run one stylization from the command line; return the exit code."""

    t0 = time.perf_counter()
    config = None if args.resume else StyleConfig(**args.settings)  # resuming: the checkpoint's
    out = Path(args.output)
    check_outputs(
        output=out,
        save_every=args.save_every,
        plot=args.plot,
        log=args.log,
        checkpoint=args.checkpoint or checkpoint_path(out),
        flags=CLI_FLAGS,
        inputs=input_files(
            args.content, args.styles or args.style, args.style_mask, resume=args.resume, weights=args.weights
        ),
        steps=args.typed.get("steps") if args.resume else args.steps,
    )  # before any work: each output writable, none of them an input or another output
    if args.styles and args.style:
        raise NSTError("give the style images either positionally or with --style, not both")
    controls = dict(output=out, save_every=args.save_every, plot=args.plot, checkpoint=args.checkpoint)
    import_tensorflow()
    from .run import stylize  # the engine (TensorFlow): only once the arguments are checked

    if args.resume:
        if args.content or args.style or args.styles or args.style_mask:
            raise NSTError("--resume continues the checkpoint's own images; give no content, style or mask")
        overrides = args.typed  # every config flag typed is applied or refused, never dropped
        result = stylize(
            progress=not args.quiet,
            weights=args.weights,
            resume=args.resume,
            callback=INTERRUPTS.check,
            during_run=INTERRUPTS.deferred(),
            **controls,
            **overrides,
        )
        config = result.config
    else:
        result = stylize(
            args.content,
            args.styles or args.style,
            config,
            progress=not args.quiet,
            weights=args.weights,
            style_mask=args.style_mask,
            callback=INTERRUPTS.check,
            during_run=INTERRUPTS.deferred(),
            **controls,
        )
    if args.log:
        result.writes(
            "the log",
            write_text,
            json.dumps(
                {
                    "config": result.config.to_dict(),
                    "memory": result.memory,
                    "timings": result.timings,
                    "best_loss": result.best_loss,
                    "interrupted": result.interrupted,
                    "message": result.message,
                    "history": result.history,
                },
                indent=1,
            ),
            args.log,
        )
    if report_failed_writes(result.writes):
        return EXIT_INTERRUPTED if result.interrupted else EXIT_ERROR
    h, w = result.image.shape[:2]
    wall = time.perf_counter() - t0
    print(
        f"wrote {out} ({w}x{h}) after {result.steps} steps, loss {result.best_loss:.4g}, "
        f"{wall:.1f} s, peak memory {peak_memory_mb():.0f} MiB"
    )
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
    out = Path(args.output)
    config = StyleConfig(**args.settings)
    ratios = args.ratios or (GRID_RATIOS if config.normalize_vgg else RAW_GRID_RATIOS)
    n_rows = len(config.style_layers) if args.cumulative_layers else 1  # sweep.cumulative_layer_weights: one per layer
    n_cells = n_rows * len(ratios) if args.save_dir else 0
    cells = [Path(args.save_dir) / _cell_name(i, len(ratios)) for i in range(n_cells)]
    check_aliases(
        [("--output", out), *(("--save-dir", cell) for cell in cells)],
        input_files(args.content, args.style, weights=args.weights),
    )  # before any work: the grid and the cells are neither an input nor each other
    check_output(out, flag="--output")
    for cell in cells:
        check_output(cell, flag="--save-dir")
    import_tensorflow()
    from .plots import (  # matplotlib and the engine: once the arguments are checked
        cumulative_labels,
        save_figure,
        sweep_grid,
    )
    from .sweep import cumulative_layer_weights, grid_settings, sweep

    n, cols = len(config.style_layers), len(ratios)
    rows = cumulative_layer_weights(n) if args.cumulative_layers else [(1.0,) * n]
    results = sweep(
        args.content,
        args.style,
        config,
        grid_settings(rows, ratios, config.alpha),
        progress=not args.quiet,
        weights=args.weights,
        callback=INTERRUPTS.check,
        during_run=INTERRUPTS.deferred(),
    )
    labels = cumulative_labels(config.style_layers) if args.cumulative_layers else ["all style layers"]
    fig = sweep_grid(
        results,
        ratios,
        labels,
        title=f"{len(results)} images from one batched run ({args.steps} {args.optimizer} steps)",
        ylabel="style layers" if args.cumulative_layers else None,
    )
    writes = Writes()
    writes("the grid", save_figure, fig, out)
    if args.save_dir:
        for i, r in enumerate(results):
            writes(_cell_name(i, cols), save_image, r.image, Path(args.save_dir) / _cell_name(i, cols))
    for i, r in enumerate(results):  # each cell that stopped early, went non-finite or kept its start: one line
        if r.message:
            where = f"beta/alpha {ratios[i % cols]:g}, {labels[i // cols]}"
            print(f"nst: cell {_cell_name(i, cols)[:-4]} ({where}): {r.message}", file=sys.stderr)
    if report_failed_writes(writes):
        return EXIT_ERROR
    print(
        f"wrote {out}: {len(rows)} x {cols} images in {results[0].timings['total_s']:.1f} s, "
        f"peak memory {peak_memory_mb():.0f} MiB"
    )
    if results[0].interrupted:
        return EXIT_INTERRUPTED
    return 1 if any(r.unoptimised for r in results) else 0  # a cell produced nothing: its image is the start


def cmd_video(args: argparse.Namespace) -> int:
    """Stylize every frame of a video from the command line; return the exit code."""
    t0 = time.perf_counter()
    require_video("cv2")  # the `video` extra: one line naming it, before any work
    config = StyleConfig(**args.settings)
    import_tensorflow()
    from .video import check_video_output, stylize_video  # the engine (TensorFlow): only once the arguments are checked

    check_video_output(args.output, args.input, args.style, args.weights, flag="--output")
    result = stylize_video(
        args.input,
        args.style,
        args.output,
        config=config,
        independent=args.independent,
        temporal=args.temporal_weight,
        frame_steps=args.frame_steps,
        flow_preset=args.flow,
        fps=args.fps,
        progress=not args.quiet,
        weights=args.weights,
        callback=INTERRUPTS.check,
        during_run=INTERRUPTS.deferred(),
    )
    if result.interrupted:
        print(f"nst: {result.message}", file=sys.stderr)
        return EXIT_INTERRUPTED
    later = [s.evaluations for s in result.stats if s.index > 0]
    error = result.mean_warping_error
    print(
        f"wrote {args.output}: {result.frames} frames at {result.fps:g} fps ({result.resumed} already done), "
        + (f"{sum(later) / len(later):.0f} evaluations per later frame, " if later else "")
        + (f"mean warping error {error:.3g}, " if math.isfinite(error) else "")
        + f"{time.perf_counter() - t0:.1f} s, peak memory {peak_memory_mb():.0f} MiB"
    )
    for s in result.stats:
        if s.message:
            print(f"nst: frame {s.index + 1}: {s.message}", file=sys.stderr)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download (or verify) the images and weights; return the exit code."""
    names = assets.known_images() if args.all else list(assets.default_images())
    for name in names:
        print(f"{name}: {assets.image_path(name)}")
    print(f"VGG19 weights: {assets.weights_path(args.weights)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print where things resolve from and what TensorFlow sees; return the exit code."""
    print(f"VGG19 weights: {assets.describe_weights()}")
    print(f"NST_DATA_DIR: {os.environ.get(assets.DATA_DIR_ENV, '(unset)')}; download cache: {assets.cache_dir()}")
    for name in assets.known_images():
        try:
            where = assets.image_path(name, download=False)
        except NSTError:
            where = "(not downloaded; `nst fetch --all`)"
        print(f"  {name}: {where}")
    import_tensorflow()
    from .model import describe_devices, resolve_precision  # TensorFlow: only once the command runs

    print(f"{describe_devices()}; Python {sys.version.split()[0]}")
    print(f"CPU allocator: {cpu_allocator()}")
    print(
        f"precision auto -> {resolve_precision('auto')} (bfloat16 where a probe convolution runs >= 1.3x faster in it)"
    )
    print(memory.describe(StyleConfig(precision=resolve_precision("auto"))))
    return 0


def cpu_allocator() -> str:
    """Return which CPU allocator TensorFlow uses in this process and who chose it, in words."""
    value = os.environ.get(ALLOCATOR_ENV, "")
    pooled = value.strip().lower() in ("1", "true")
    what = (
        "TensorFlow's pooling BFC allocator"
        if pooled
        else "TensorFlow's default (oneDNN's pool where oneDNN is on, else malloc: big buffers go back to the OS)"
    )
    who = "nst_utils' default" if ALLOCATOR_SET_BY_US else "your setting"
    return f"{what} ({ALLOCATOR_ENV}={value}, {who})"


class Interrupts:
    """Ctrl-C (SIGINT), `kill` (SIGTERM) and a closed terminal (SIGHUP): at once, except while the optimiser runs,
    where they stop the run at its next progress callback (between compiled calls), so it keeps its best image and
    writes its checkpoint; `nst` then exits 128 + the signal's number (130, 143, 129).

    A KeyboardInterrupt raised at an arbitrary point inside a compiled TensorFlow call can leave it hanging; raised
    from the callback, the run stops cleanly. Before the first evaluation (reading inputs, a download, building the
    network) there is nothing to keep: the signal stops `nst` at once. Once the optimiser has finished (`finishing`:
    writing the result, the plot, the log), a first signal waits until every output is written, and `nst` then exits
    128 + its number: a finished result is never thrown away. A second signal always stops at once (an output being
    written is left as it was: atomic writes), except SIGHUP again (a closing terminal's shell and kernel may each
    send one).
    """

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.deferring = False
        self.finishing = False

    def reset(self) -> None:
        """Forget earlier signals and phases (a new command starts)."""
        self.signals.clear()
        self.deferring = self.finishing = False

    def handler(self, signum: int, frame) -> None:
        """Note the signal; raise KeyboardInterrupt now unless a run is between compiled calls (and it is the first)."""
        if signum == getattr(signal, "SIGHUP", None) and signum in self.signals:
            return
        self.signals.append(signum)
        if not (self.deferring or self.finishing) or len(self.signals) > 1:
            raise KeyboardInterrupt
        if self.finishing:
            print("\nnst: writing the outputs, then stopping (press Ctrl-C again to stop at once)", file=sys.stderr)
        else:
            print("\nnst: stopping after the current step (press Ctrl-C again to stop at once)", file=sys.stderr)

    @contextlib.contextmanager
    def deferred(self):
        """Return a context (for stylize's `during_run`) inside which a first signal waits for the next callback;
        after it, the outputs are being written (`finishing`)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring, self.finishing = False, True
        if self.signals:  # a signal during the last call, which then ended: stop as the callback would have
            raise KeyboardInterrupt

    def check(self, *progress) -> None:
        """A stylize/sweep callback: raise KeyboardInterrupt if a signal is pending."""
        if self.signals:
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        """Return the exit code of a run a signal stopped: 128 + the number of the last one (130 for Ctrl-C)."""
        return 128 + self.signals[-1] if self.signals else EXIT_INTERRUPTED

    @property
    def name(self) -> str:
        """Return " (SIGTERM)", " (SIGHUP)", ... for the last signal: "" for Ctrl-C or none."""
        last = self.signals[-1] if self.signals else signal.SIGINT
        return "" if last == signal.SIGINT else f" ({signal.Signals(last).name})"


INTERRUPTS = Interrupts()


class QuietStream:
    """stdout or stderr as `nst` writes to it: a write never fails, whatever the text and wherever the stream leads.

    A character the stream's encoding cannot hold (a file name's undecodable byte, kept by os.fsdecode as a surrogate
    escape; any non-ASCII character on an ASCII stream) is written as the \\xNN escapes of its bytes in the file
    name; once the stream fails (a reader that has gone: a closed pipe such as `| head`, a hung-up terminal; or a
    full disk), the rest is dropped and the stream's file descriptor pointed at /dev/null, so that the last flush
    does not fail either. `failure` keeps why, for main to name in one line unless the reader had just gone.
    """

    QUIET = (errno.EPIPE, errno.EIO)  # the reader has gone: nothing to say, and nowhere to say it

    def __init__(self, stream) -> None:
        self.stream, self.gone, self.failure = stream, False, None

    def write(self, text: str) -> int:
        """Return len(text) after writing it (escaped where the encoding cannot hold it), or dropping it if the reader
        has gone."""
        if not self.gone:
            try:
                self.stream.write(self._printable(text))
            except OSError as exc:  # BrokenPipeError, EIO from a hung-up terminal, ENOSPC
                self._leave(exc)
        return len(text)

    def flush(self) -> None:
        """Return None after flushing the stream (nothing if the reader has gone)."""
        if not self.gone:
            try:
                self.stream.flush()
            except OSError as exc:
                self._leave(exc)

    def _printable(self, text: str) -> str:
        """Return `text` as the stream's encoding holds it: as is, or with each character it cannot hold escaped."""
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        errors = "surrogateescape" if getattr(self.stream, "errors", None) == "surrogateescape" else "strict"
        try:
            text.encode(encoding, errors)
            return text
        except (UnicodeEncodeError, LookupError):
            return "".join(_escaped(char, encoding) for char in text)

    def _leave(self, exc: OSError) -> None:
        """Return None after marking the stream gone (`failure`: why) and pointing its file descriptor at /dev/null."""
        self.gone, self.failure = True, exc
        with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test's capture): nothing to point
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self.stream.fileno())
            finally:
                os.close(null)

    def __getattr__(self, name: str):
        """Return the wrapped stream's attribute (encoding, fileno, isatty, ...)."""
        return getattr(self.stream, name)


def _escaped(char: str, encoding: str) -> str:
    """Return one character as `encoding` holds it: itself, else the \\xNN escapes of its bytes in a file name (a
    surrogate escape gives back its byte: os.fsencode)."""
    try:
        char.encode(encoding)
        return char
    except (UnicodeEncodeError, LookupError):
        pass
    try:
        return "".join(f"\\x{b:02x}" for b in os.fsencode(char))
    except UnicodeEncodeError:  # a lone surrogate no file name holds
        return char.encode("ascii", "backslashreplace").decode("ascii")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nst`; return the process exit code (or, after a signal, exit at once with it).

    Output goes through QuietStream: a closed pipe (`nst info | head -1`) ends quietly, any file name prints.
    """
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if s is None or isinstance(s, QuietStream) else QuietStream(s) for s in streams)
    try:
        return _main(argv)
    finally:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        failure = getattr(sys.stdout, "failure", None)
        if failure is not None and failure.errno not in QuietStream.QUIET:  # a full disk: say so, once
            print(f"nst: warning: could not print all of the output ({failure.strerror or failure})", file=sys.stderr)
        sys.stdout, sys.stderr = streams


def _main(argv: list[str] | None) -> int:
    """Return the exit code of `nst ARGV` (or, after a signal, exit at once with it)."""
    args = build_parser().parse_args(argv)
    command = {"stylize": cmd_stylize, "sweep": cmd_sweep, "fetch": cmd_fetch, "info": cmd_info, "video": cmd_video}[
        args.command
    ]
    INTERRUPTS.reset()
    old_handlers = (
        {
            sig: signal.signal(sig, INTERRUPTS.handler)
            for sig in STOP_SIGNALS
            if signal.getsignal(sig) is not signal.SIG_IGN  # ignored by who started us (`nohup`, `cmd &`): stays so
        }
        if threading.current_thread() is threading.main_thread()
        else {}
    )
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
        if code == 0 and INTERRUPTS.signals:  # a signal while the finished run's outputs were written: they are
            print(f"nst: interrupted{INTERRUPTS.name} after the run finished; its outputs are written", file=sys.stderr)
        return INTERRUPTS.exit_code if code == EXIT_INTERRUPTED or (code == 0 and INTERRUPTS.signals) else code
    except NSTError as exc:
        if args.debug:
            raise
        print(f"nst: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"nst: interrupted{INTERRUPTS.name}", file=sys.stderr)
        return INTERRUPTS.exit_code
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

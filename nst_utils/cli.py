"""The `nst` command: stylize, fetch, info. Errors print one line (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from .errors import NSTError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for `nst`."""
    from .config import CONTENT_LAYERS, INITS, OPTIMIZERS, STYLE_LAYERS, StyleConfig

    d = StyleConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="nst", description="Neural style transfer (Gatys et al. 2015) with VGG19.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stylize", help="restyle a content image like a style image",
                       description="Restyle CONTENT like STYLE. With no images, uses the two default images.")
    s.add_argument("content", nargs="?", help="content image path or registry name (default: japanese_garden.jpg)")
    s.add_argument("style", nargs="?", help="style image path or registry name (default: picasso_selfportrait.jpg)")
    s.add_argument("-o", "--output", default="result.png", help="output PNG path (default: %(default)s)")
    s.add_argument("--size", type=_positive_int, default=d["size"].default, help="long side of the output in px (default: %(default)s)")
    s.add_argument("--steps", type=_positive_int, default=d["steps"].default, help="loss evaluations / optimiser steps (default: %(default)s)")
    s.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"].default, help="default: %(default)s")
    s.add_argument("--alpha", type=_weight, default=d["alpha"].default, help="content weight (default: %(default)g)")
    s.add_argument("--beta", type=_weight, default=d["beta"].default, help="style weight (default: %(default)g)")
    s.add_argument("--tv", type=_weight, default=d["tv"].default, help="total variation weight (default: %(default)g)")
    s.add_argument("--content-layers", nargs="+", default=list(CONTENT_LAYERS), metavar="LAYER", help="default: %(default)s")
    s.add_argument("--style-layers", nargs="+", default=list(STYLE_LAYERS), metavar="LAYER", help="default: %(default)s")
    s.add_argument("--style-layer-weights", nargs="+", type=_weight, metavar="W", help="one weight per style layer (normalised)")
    s.add_argument("--init", choices=INITS, default=d["init"].default, help="starting image (default: %(default)s)")
    s.add_argument("--seed", type=int, default=d["seed"].default, help="random seed (default: %(default)s)")
    s.add_argument("--pooling", choices=("max", "avg"), default=d["pooling"].default, help="VGG19 pooling (default: %(default)s)")
    s.add_argument("--lr", type=_weight, default=d["learning_rate"].default, help="Adam learning rate (default: %(default)s)")
    s.add_argument("--weights", help="path to the VGG19 notop h5 file (default: $NST_VGG19_WEIGHTS, then the Keras cache, then download)")
    s.add_argument("--log", metavar="HISTORY.json", help="write the config, timings and each loss term per step as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    f = sub.add_parser("fetch", help="download the default images and the VGG19 weights for offline use")
    f.add_argument("--all", action="store_true", help="fetch every image in the registry, not just the defaults")
    f.add_argument("--weights", help="use this weights file instead of downloading (checked by md5)")

    sub.add_parser("info", help="show where the weights and images come from, TensorFlow version and devices")
    return p


def ensure_writable(path: str | os.PathLike) -> Path:
    """Return `path` after checking that its folder can be created and written to, before any work is done."""
    p = Path(path)
    if p.is_dir():
        raise NSTError(f"output {p} is a directory; give a file name such as {p / 'result.png'}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=".nst-write-check-"):
            pass
    except OSError as exc:
        raise NSTError(f"cannot write to {p.parent} ({exc.strerror or exc}); choose another --output") from exc
    return p


def peak_memory_mb() -> float:
    """Return this process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cmd_stylize(args: argparse.Namespace) -> int:
    """Run one stylization from the command line; return the exit code."""
    from .config import StyleConfig
    from .images import save_image, write_text
    from .optimize import stylize

    t0 = time.perf_counter()
    config = StyleConfig(size=args.size, steps=args.steps, optimizer=args.optimizer, alpha=args.alpha, beta=args.beta,
                         tv=args.tv, content_layers=tuple(args.content_layers), style_layers=tuple(args.style_layers),
                         style_layer_weights=tuple(args.style_layer_weights) if args.style_layer_weights else None,
                         init=args.init, seed=args.seed, pooling=args.pooling, learning_rate=args.lr)
    out = ensure_writable(args.output)
    if args.log:
        ensure_writable(args.log)
    result = stylize(args.content, args.style, config, progress=not args.quiet, weights=args.weights)
    save_image(result.image, out)
    if args.log:
        write_text(json.dumps({"config": config.to_dict(), "timings": result.timings, "best_loss": result.best_loss,
                               "interrupted": result.interrupted, "message": result.message,
                               "history": result.history}, indent=1), args.log)
    h, w = result.image.shape[:2]
    wall = time.perf_counter() - t0
    print(f"wrote {out} ({w}x{h}) after {result.steps} steps, loss {result.best_loss:.4g}, "
          f"{wall:.1f} s, peak memory {peak_memory_mb():.0f} MiB")
    if result.message:
        print(f"nst: {result.message}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 1 if result.message.startswith("loss became") else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download (or verify) the images and weights; return the exit code."""
    from . import data, weights

    names = data.known_images() if args.all else list(data.default_images())
    for name in names:
        print(f"{name}: {data.image_path(name)}")
    print(f"VGG19 weights: {weights.resolve(args.weights)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print where things resolve from and what TensorFlow sees; return the exit code."""
    from . import data, weights

    print(f"VGG19 weights: {weights.describe()}")
    print(f"NST_DATA_DIR: {os.environ.get(data.DATA_DIR_ENV, '(unset)')}; download cache: {data.cache_dir()}")
    for name in data.known_images():
        try:
            where = data.image_path(name, download=False)
        except NSTError:
            where = "(not downloaded; `nst fetch --all`)"
        print(f"  {name}: {where}")
    import tensorflow as tf

    devices = ", ".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in tf.config.list_physical_devices())
    print(f"TensorFlow {tf.__version__}; devices: {devices}; Python {sys.version.split()[0]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nst`; return the process exit code."""
    args = build_parser().parse_args(argv)
    command = {"stylize": cmd_stylize, "fetch": cmd_fetch, "info": cmd_info}[args.command]
    try:
        return command(args)
    except NSTError as exc:
        if args.debug:
            raise
        print(f"nst: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("nst: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        if args.debug:
            raise
        print("nst: error: out of memory; try a smaller --size", file=sys.stderr)
        return EXIT_ERROR

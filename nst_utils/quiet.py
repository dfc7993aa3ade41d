"""Import TensorFlow without its C++ start-up log lines (they are informational, not errors)."""

from __future__ import annotations

import os
import sys


def import_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with C++ stderr chatter hidden; `NST_DEBUG=1` shows it."""
    if "tensorflow" in sys.modules or os.environ.get("NST_DEBUG"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no real stderr (some embedded interpreters): import as usual
        return
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

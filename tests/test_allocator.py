"""The package picks TensorFlow's pooling (BFC) CPU allocator before TensorFlow makes one, a user's setting wins,
and `nst info` says which is in use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
if sys.argv[1] == "tf-first":
    import tensorflow as tf  # a notebook that imports TensorFlow itself before the package
import nst_utils
import tensorflow as tf
print(float(tf.reduce_sum(tf.ones((64, 64)) @ tf.ones((64, 64)))))
"""


def _run(*argv: str, **env: str | None) -> subprocess.CompletedProcess:
    """Return the finished `python ARGV` with TensorFlow's allocator log lines on and `env` applied."""
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="bfc_allocator=1")
    e.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    e.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([sys.executable, *argv], env=e, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("order", ["package-first", "tf-first"])
def test_the_bfc_allocator_is_made_whoever_imports_tensorflow_first(order):
    r = _run("-c", PROBE, order)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Creating new BFCAllocator named: bfc_cpu_allocator_for_gpu" in r.stderr  # TensorFlow's CPU BFC pool


def test_a_users_setting_wins_and_nst_info_says_so():
    r = _run("-c", PROBE, "package-first", TF_CPU_ALLOCATOR_USE_BFC="false")
    assert r.returncode == 0 and "bfc_cpu_allocator_for_gpu" not in r.stderr
    mine = _run("-m", "nst_utils", "info", TF_CPU_ALLOCATOR_USE_BFC="false")
    ours = _run("-m", "nst_utils", "info")
    line = {
        name: next(x for x in r.stdout.splitlines() if x.startswith("CPU allocator:"))
        for name, r in (("mine", mine), ("ours", ours))
    }
    assert "TF_CPU_ALLOCATOR_USE_BFC=false, your setting" in line["mine"] and "default" in line["mine"]
    assert "pooling BFC allocator (TF_CPU_ALLOCATOR_USE_BFC=true, nst_utils' default)" in line["ours"]

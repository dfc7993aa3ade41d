"""Host memory probes: what this process can still use (system memory capped by a cgroup limit) and holds now."""

from __future__ import annotations

from pathlib import Path

MIB = 1 << 20
SAFETY = 0.9  # use at most this share of the available memory


def cgroup_free() -> int | None:
    """Return the bytes left under this process's cgroup (v2 or v1) memory limit, or None if unlimited."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            return max(0, int(text) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> int:
    """Return the memory this process can still use: the system's available memory, capped by a cgroup limit."""
    import psutil

    free = psutil.virtual_memory().available
    cg = cgroup_free()
    return min(free, cg) if cg is not None else free


def resident_bytes() -> int:
    """Return this process's current resident memory in bytes."""
    import psutil

    return psutil.Process().memory_info().rss

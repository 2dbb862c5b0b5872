"""What the machine lets this process use (a leaf module: cheap to import, e.g. from serve/settings.py)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    # The cores this process may use (taskset, a container's CPU set), not the machine's.
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)

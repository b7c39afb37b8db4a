"""Where a benchmark's figures come from: the checkout's commit."""
from __future__ import annotations

import resource
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The checkout's short commit, marked when tracked files have uncommitted changes."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    # Changes to bench/results (the figures being written) are not changes to the code they measure.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}"


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: what the commands a bench ran used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

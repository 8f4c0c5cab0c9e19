"""/proc readings the benchmarks share (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def process_stats() -> Iterator[tuple[int, str]]:
    """(pid, the text of /proc/<pid>/stat) of every process still there when read."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "stat").read_text()
            except OSError:
                continue


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (a relay and its uvicorn workers)."""
    children: dict[int, list[int]] = {}
    for pid, stat in process_stats():
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids`: a figure the machine's other load
    does not distort the way it distorts wall-clock rates."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of `pids` together, in MiB (each process's VmRSS; shared pages count
    once per process)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total / 1024

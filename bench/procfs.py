"""/proc readings the benchmarks share (Linux)."""

from __future__ import annotations

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

"""Where the relay's CPU goes, per layer, from a py-spy profile of the running relay (not a test).

    python bench/relay_sends.py --workers 1 --duration 20 --rate-duration 0 &
    py-spy record -p <pid of `python -m relay`> -d 10 -r 250 --nonblocking --format raw -o relay.txt
    python bench/profile_layers.py relay.txt --us-per-send 245

Each sample counts for the innermost frame that names a layer (a sample in nats-py under the
replay check is the publish's, not the check's); `--us-per-send` (the benchmark's relay CPU per
send) turns shares into microseconds. The table in docs/api.md ("Performance") comes from here.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LAYERS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in [
        ("signature and replay check", r"relay/auth\.py|relay/signed\.py|relay/replay\.py|hmac"),
        ("publish and ack (nats-py)", r"nats/|relay/jetstream\.py|relay/publish\.py|nats_adapt"),
        ("body validation (pydantic)", r"pydantic|schemas/commands\.py|relay/models\.py"),
        ("JSON", r"json/|from_json|schemas/envelope\.py"),
        ("middleware (incl. the hot-path router)", r"relay/middleware/|structlog"),
        ("Starlette routing, request and response", r"starlette/|relay/endpoints\.py|relay/routes/"
         r"|relay/problems\.py|relay/state\.py"),
        ("server and protocol (uvicorn)", r"uvicorn/|wabus/deadlines\.py"),
        ("event loop and sockets (uvloop, C)", r"asyncio|uvloop|Runner\.run"),
    ]
]  # fmt: skip


def layer_samples(lines: list[str]) -> tuple[Counter[str], int]:
    """Samples per layer, and the total, from py-spy's raw format (`frame;frame;... count`)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, number = line.rstrip().rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        for frame in reversed(stack.split(";")):
            layer = next((name for name, pattern in LAYERS if pattern.search(frame)), None)
            if layer:
                counts[layer] += samples
                break
        else:
            counts["other"] += samples
    return counts, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--us-per-send", type=float, help="relay CPU per send, from the bench")
    args = parser.parse_args()
    counts, total = layer_samples(args.profile.read_text().splitlines())
    for name, samples in counts.most_common():
        share = samples / max(1, total)
        micros = f"  {share * args.us_per_send:5.0f} µs/send" if args.us_per_send else ""
        print(f"{name:42s} {100 * share:5.1f} %{micros}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()

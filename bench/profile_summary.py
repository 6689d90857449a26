#!/usr/bin/env python3
"""A py-spy profile of the gateway as text: where its CPU goes, by thread, by function
(self) and by callgate's own functions (inclusive).

    py-spy record -p <gateway pid> -d 8 -r 200 --threads --gil -f raw -o gateway.raw
    python bench/profile_summary.py gateway.raw [--top 30] > bench/profiles/<name>.txt

`-f raw` writes one line per distinct stack ("frame;frame;... count"), which is all this
reads. `--gil` keeps only the samples of the thread holding the GIL, which is the Python
CPU time to be had: without it, threads blocked in C (a queue's get, the event loop's
epoll) count as busy. Shares are of all samples taken.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path


def summary(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        # py-spy names a thread "thread (<tid>): <name>" when it can; the tid is noise.
        threads[frames[0].split(": ", 1)[-1]] += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return f"{raw}: no samples\n"
    lines = [f"{total} samples from {raw.name}", "", "by thread:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in threads.most_common(8)]
    lines += ["", f"top {top} functions by their own time:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", f"top {top} of callgate's functions, callees included:"]
    ours = [(frame, n) for frame, n in inclusive.most_common() if "gateway/" in frame]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in ours[:top]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy's output with -f raw")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    sys.stdout.write(summary(args.raw, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

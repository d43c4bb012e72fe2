"""Run a command and add its wall time to <out>/wall_seconds, so that a study run in several sittings (stopped,
then resumed: finished runs are skipped) reports the sum of its sittings and not only the last one's. The seconds
are added whether the command finishes, fails or is interrupted; its exit status is returned.

    python -m tools.timed runs/real-study -- retain sweep configs/sweeps/real-smollm2.yaml

The docs' wall times (tools/real_study.py's `wall_time`) read this file.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from retain.core.files import atomic_write_text

USAGE = "usage: python -m tools.timed OUT_DIR -- COMMAND [ARG ...]"


def add_seconds(out: Path, seconds: float) -> float:
    """<out>/wall_seconds plus `seconds`, written (a new file starts at 0); returns the new total."""
    path = out / "wall_seconds"
    total = (float(path.read_text()) if path.is_file() else 0.0) + seconds
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, f"{total:.0f}\n")
    return total


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    out, command = Path(argv[0]), argv[2:]
    start = time.monotonic()
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:  # the command got the interrupt too; its sitting still counts
        return 130
    finally:
        add_seconds(out, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tools.lab build-data | pretrain | card | docs SWEEP.yaml [...]` (from the repo root)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retain.cli import DEBUG_HELP, positive_int, run_command
from retain.core.errors import ConfigError
from retain.core.paths import LAB_DATA_DIR, LAB_MODEL_DIR


def cmd_lab(args) -> int:
    if args.lab_command == "docs":
        from tools.lab.docs import write_docs

        if not args.sweeps:
            raise ConfigError("python -m tools.lab docs SWEEP.yaml [...]: name the finished sweeps' files")
        write_docs([Path(p) for p in args.sweeps], Path(args.out or "docs"))
        print(f"wrote {Path(args.out or 'docs') / 'mitigations.md'} and claims.md")
    elif args.lab_command == "card":
        from tools.lab.card import write_card

        write_card(Path(args.out or LAB_MODEL_DIR))
        print(f"wrote {Path(args.out or LAB_MODEL_DIR) / 'README.md'}")
    elif args.lab_command == "build-data":
        from tools.lab.corpus import build

        for name, n in build(Path(args.out or LAB_DATA_DIR), seed=args.seed).items():
            print(f"{n:6d}  {name}")
    else:
        from tools.lab.pretrain import pretrain

        print(pretrain(LAB_DATA_DIR / "pretrain.jsonl", Path(args.out or LAB_MODEL_DIR), steps=args.steps,
                       seed=args.seed))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.lab", description="rebuild the lab's data, model, card or docs")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    p.add_argument("lab_command", choices=["build-data", "pretrain", "card", "docs"])
    p.add_argument("sweeps", nargs="*", help="docs: the finished sweeps' YAML files")
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=3600)
    p.set_defaults(func=cmd_lab)
    return p


if __name__ == "__main__":
    sys.exit(run_command(parser().parse_args()))

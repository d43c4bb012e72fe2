"""`retain` command line: train, eval, report, demo, lab.

    retain train CONFIG.yaml [key=value ...] [--resume] [--overwrite]
    retain eval MODEL --suite SUITE [--split test] [--limit N] [--batch-size B] [--dtype D] [--device D] [--out results.json]
    retain report BEFORE.json AFTER.json [AFTER2.json ...] --out DIR [--run RUN_DIR]
    retain demo [--out DIR]
    retain sweep SWEEP.yaml
    retain merge BASE MODEL [MODEL ...] --method ties --out DIR
    retain lab build-data | pretrain | card | docs SWEEP.yaml [...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_train(args) -> int:
    import retain

    result = retain.train(args.config, tuple(args.overrides), resume=args.resume, overwrite=args.overwrite)
    print(f"trained {result.steps} steps; final weights: {result.final_dir}; metrics: {result.metrics_path}")
    return 0


def cmd_eval(args) -> int:
    from retain.evaluation.runner import evaluate_path

    results = evaluate_path(args.model, args.suite, args.split, Path(args.out) if args.out else None,
                            limit=args.limit, dtype=args.dtype,
                            batch_size=args.batch_size, device=args.device, rolling_bos=args.rolling_bos)
    for task, res in results["tasks"].items():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in res["metrics"].items())
        print(f"{task:24s} {shown}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_report(args) -> int:
    from retain.report.build import write_report

    paths = write_report([Path(p) for p in args.results], Path(args.out),
                         run_dirs=[Path(r) for r in args.run], labels=args.label or None)
    print(paths["headline"])
    print(f"report: {paths['html']}")
    return 0


def cmd_demo(args) -> int:
    from retain.lab.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def cmd_sweep(args) -> int:
    from retain.sweep import run_sweep

    summary = run_sweep(Path(args.config))
    print(f"Pareto front: {', '.join(summary['pareto_front'])}")
    return 0


def cmd_merge(args) -> int:
    from retain.merging import merge_models

    out = merge_models(args.base, args.models, args.method, Path(args.out), density=args.density, scale=args.scale,
                       alpha=args.alpha)
    print(f"merged model: {out}")
    return 0


def cmd_lab(args) -> int:
    from retain.config import LAB_DATA_DIR, LAB_MODEL_DIR

    if args.lab_command == "docs":
        from retain.lab.docs import write_docs

        if not args.sweeps:
            raise ValueError("retain lab docs SWEEP.yaml [...]: name the finished sweeps' files")
        write_docs([Path(p) for p in args.sweeps], Path(args.out or "docs"))
        print(f"wrote {Path(args.out or 'docs') / 'mitigations.md'} and claims.md")
    elif args.lab_command == "card":
        from retain.lab.card import write_card

        write_card(Path(args.out or LAB_MODEL_DIR))
        print(f"wrote {Path(args.out or LAB_MODEL_DIR) / 'README.md'}")
    elif args.lab_command == "build-data":
        from retain.lab.corpus import build

        for name, n in build(Path(args.out or LAB_DATA_DIR), seed=args.seed).items():
            print(f"{n:6d}  {name}")
    else:
        from retain.lab.pretrain import pretrain

        info = pretrain(LAB_DATA_DIR / "pretrain.jsonl", Path(args.out or LAB_MODEL_DIR), steps=args.steps,
                        seed=args.seed)
        print(info)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retain", description="Fine-tune without forgetting, and measure it.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune from a YAML config")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="dotted key=value, e.g. training.lr=1e-4")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output.dir")
    t.add_argument("--overwrite", action="store_true", help="replace a previous run in output.dir")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="score a model on a capability suite")
    e.add_argument("model", help="model dir or hub id, adapter dir, or an alias (retain-tiny, smollm2-135m-instruct)")
    e.add_argument("--suite", default="lab", help="comma-separated: bundled names (lab, city_country), "
                   "task/suite YAMLs (retain's or lm-eval's format), mmlu, mmlu:SUBJECT[@K], lm-eval:NAME")
    e.add_argument("--split", default="test", choices=["dev", "test"])
    e.add_argument("--out", help="results JSON (per-item scores, for `retain report`); omitted: print only")
    e.add_argument("--limit", type=int, default=None, help="score only the first N items of each task")
    e.add_argument("--batch-size", type=int, default=64, help="requests per forward pass")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    e.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    e.add_argument("--rolling-bos", default="lm-eval", choices=["lm-eval", "single"],
                   help="perplexity: lm-eval's windows (a second BOS for tokenizers that add one) or one BOS")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="before/after forgetting report")
    r.add_argument("results", nargs="+", help="results.json of the base first, then one or more fine-tunes")
    r.add_argument("--out", required=True)
    r.add_argument("--run", action="append", default=[], help="run dir whose metrics.jsonl to plot (repeatable)")
    r.add_argument("--label", action="append", help="a name per results file, in order")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the lab end to end: evaluate, fine-tune twice, report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="fewer steps and items (for tests)")
    d.set_defaults(func=cmd_demo)

    sw = sub.add_parser("sweep", help="many strategies on one task; table and Pareto front")
    sw.add_argument("config")
    sw.set_defaults(func=cmd_sweep)

    mg = sub.add_parser("merge", help="interpolate or merge fine-tunes of one base")
    mg.add_argument("base", help="the base model (id, dir, or retain-tiny)")
    mg.add_argument("models", nargs="+", help="fine-tuned model or adapter dirs")
    mg.add_argument("--method", choices=["interpolate", "task_arithmetic", "ties"], default="task_arithmetic")
    mg.add_argument("--alpha", type=float, default=0.5, help="interpolate: weight of the fine-tune")
    mg.add_argument("--scale", type=float, default=1.0, help="task_arithmetic/ties: scale of the merged task vector")
    mg.add_argument("--density", type=float, default=0.2, help="ties: share of each task vector kept")
    mg.add_argument("--out", required=True)
    mg.set_defaults(func=cmd_merge)

    lab = sub.add_parser("lab", help="rebuild the lab's data or base model")
    lab.add_argument("lab_command", choices=["build-data", "pretrain", "card", "docs"])
    lab.add_argument("sweeps", nargs="*", help="docs: the finished sweeps' YAML files")
    lab.add_argument("--out", default=None)
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--steps", type=int, default=3600)
    lab.set_defaults(func=cmd_lab)
    return p


def main(argv: list[str] | None = None) -> int:
    from retain.configs import ConfigError
    from retain.data import DataError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError) as e:
        print(f"retain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

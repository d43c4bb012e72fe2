"""`retain` command line: init, train, eval, report, card, demo, sweep, merge, config, doctor.

    retain train CONFIG.yaml [key=value ...] [--resume] [--overwrite]
    retain eval MODEL --suite SUITE [--split test] [--limit N] [--batch-size B] [--dtype D] [--device D] [--out results.json]
    retain report BEFORE.json AFTER.json [AFTER2.json ...] --out DIR [--run RUN_DIR] [--label base,a,a,b,b]
    retain init MODEL [--data FILE] [--dev FILE] [--out DIR]   a starter config and suite for a model
    retain card RUN_DIR --base BASE.json --tuned TUNED.json [--out README.md] [--push REPO]
    retain demo [--out DIR]
    retain sweep SWEEP.yaml
    retain sequence SEQ.yaml [key=value ...]
    retain tune TUNE.yaml [--backend optuna|ray]
    retain merge BASE MODEL [MODEL ...] --method ties --out DIR
    retain config --explain [KEY]          what a config key means (training.lr, mitigations.lora.r, a section;
                                           sweep, tune.seeds, a study file)
    retain doctor CONFIG.yaml [key=value ...] [--json] [--probe N]   causes of forgetting, before training

Every command runs inside one error boundary (`main`): a user error (retain.core.errors.UserError,
or an OSError about the user's files) prints `retain: error: WHERE: what is wrong — what to do`
and exits 2; `--debug` adds the traceback. Anything else is a bug: the traceback, a request to
report it, exit 1. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
from pathlib import Path

EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130
# OSErrors about the user's files and disks (not retain's logic), reported without a traceback
USER_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
               errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}
OS_HINTS = {errno.ENOSPC: "free some space, or write elsewhere", errno.EDQUOT: "free some space, or write elsewhere",
            errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
            errno.EROFS: "write elsewhere"}
REPORT_BUG = ("this is a bug in retain, not a problem with your input: please report it with the command you ran "
              "and the traceback above")


def cmd_train(args) -> int:
    import retain

    result = retain.train(args.config, tuple(args.overrides), resume=args.resume, overwrite=args.overwrite,
                          allow_config_change=args.allow_config_change)
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun: once, not per process
        print(f"trained {result.steps} steps; final weights: {result.final_dir}; metrics: {result.metrics_path}")
        budget = Path(result.output_dir) / "retention.json"
        if budget.is_file():  # how the retention budget ended: held, or what broke it and what it did
            from retain.report.render import budget_lines

            print(*budget_lines({"retention_budgets": {str(result.output_dir): json.loads(budget.read_text())}}))
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
    from retain.core.schema import ConfigError
    from retain.report.build import write_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file, not a directory — the report is a directory (report.html, "
                          "report.md, report.json); choose a new path")

    paths = write_report([Path(p) for p in args.results], Path(args.out),
                         run_dirs=[Path(r) for r in args.run], labels=split_labels(args.label))
    print(paths["headline"])
    print()
    print(paths["verdicts"])
    print(f"report: {paths['html']}")
    return 0


def split_labels(given: list[str] | None) -> list[str] | None:
    """--label values, each of which may hold several comma-separated labels: ['base,a', 'b'] -> ['base', 'a', 'b']."""
    from retain.core.schema import ConfigError

    if not given:
        return None
    labels = [part.strip() for value in given for part in value.split(",")]
    if "" in labels:
        raise ConfigError(f"--label: an empty label in {','.join(given)!r}; give one name per results file, "
                          "e.g. --label base,unprotected,protected")
    return labels


def cmd_init(args) -> int:
    from retain.studies.starter import write_starter

    starter = write_starter(args.model, Path(args.out), data=args.data, dev=args.dev, force=args.force)
    print(f"wrote {', '.join(map(str, starter.written))}")
    print(f"{'a chat model: prompt/response data is trained through its chat template; ' if starter.chat else ''}"
          f"max_length {starter.max_length}")
    *steps, card = starter.commands
    print("next, in order (the base model, training, the fine-tune, the report; --limit N scores the first N "
          "items of each task: leave it out for all):")
    print("\n".join(f"  {k}. {command}" for k, command in enumerate(steps, start=1)))
    print(f"then the model card: {card}")
    return 0


def cmd_card(args) -> int:
    from retain.core.schema import ConfigError
    from retain.report.card import push_card, write_card

    if args.push and args.out:
        raise ConfigError("--push uploads RUN_DIR/final with the card as its README.md — leave out --out")
    out = write_card(Path(args.run_dir), Path(args.base), Path(args.tuned), Path(args.out) if args.out else None,
                     model_name=args.push.split("/")[-1] if args.push else None, force=args.force)
    print(f"model card: {out}")
    if args.push:
        print(f"uploaded {out.parent}: {push_card(out.parent, args.push)}")
    return 0


def cmd_demo(args) -> int:
    from retain.studies.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def cmd_sweep(args) -> int:
    from retain.studies.sweep import run_sweep

    summary = run_sweep(Path(args.config))
    print(f"Pareto front: {', '.join(summary['pareto_front'])}")
    return 0


def cmd_sequence(args) -> int:
    from retain.studies.continual import run_sequence
    from retain.studies.continual.summary import estimate

    summaries = run_sequence(Path(args.config), tuple(args.overrides))
    for seed, summary in summaries.items():
        print(f"{f'seed {seed}: ' if len(summaries) > 1 else ''}ACC {estimate(summary['acc'], signed=False)}  "
              f"BWT {estimate(summary['bwt'])}  FWT {estimate(summary['fwt'])}  "
              f"forgetting {estimate(summary['forgetting'])}  (points, 95% CI)")
    return 0


def cmd_tune(args) -> int:
    from retain.studies.tune import run_tune

    summary = run_tune(Path(args.config), backend=args.backend)
    out = Path(summary["tune"]["report_dir"])
    print(f"dev Pareto front: {', '.join(summary['pareto_front'])}; recommended: {summary['tune']['recommended']} "
          f"({out / 'recommended.yaml'}); report: {out / 'report.md'}")
    return 0


def cmd_merge(args) -> int:
    from retain.core.schema import ConfigError
    from retain.studies.merge import merge_models

    if args.method == "interpolate" and len(args.models) != 1:
        raise ConfigError(f"--method interpolate: takes exactly one fine-tuned model, got {len(args.models)} — "
                          "use task_arithmetic or ties to merge several")

    out = merge_models(args.base, args.models, args.method, Path(args.out), density=args.density, scale=args.scale,
                       alpha=args.alpha)
    print(f"merged model: {out}")
    return 0


def cmd_config(args) -> int:
    from retain.studies.explain import explain

    print(explain(args.explain))
    return 0


def cmd_doctor(args) -> int:
    import json

    from retain.config import load_config
    from retain.report.doctor import diagnose, render

    diagnosis = diagnose(load_config(args.config, tuple(args.overrides)), probe=args.probe)
    print(json.dumps(diagnosis.to_json(), indent=2) if args.json else render(diagnosis, args.config))
    return 0  # findings are advice: a config that loads is never an error here


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


DEBUG_HELP = "on an error, show the full traceback"


def add_train(sub, common: argparse.ArgumentParser) -> None:
    # the section descriptions are the run config's own help (importing retain has loaded it already)
    from retain.config.explain import sections_text

    t = sub.add_parser("train", help="fine-tune from a YAML config", parents=[common],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"config sections:\n{sections_text()}\n\n"
                              "retain config --explain KEY says what a key does, e.g. training.lr")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="dotted key=value, e.g. training.lr=1e-4")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output.dir")
    t.add_argument("--overwrite", action="store_true", help="replace a previous run in output.dir")
    t.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue although the config differs from the checkpoint's; "
                        "the new values apply from the resumed step")
    t.set_defaults(func=cmd_train)


def add_eval(sub, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser("eval", help="score a model on a capability suite", parents=[common])
    e.add_argument("model", help="model dir or hub id, adapter dir, a .gguf file, or an alias (retain-tiny, "
                   "smollm2-135m-instruct, gemma3-270m)")
    e.add_argument("--suite", required=True, help="what to score, comma-separated: bundled names (lab, city_country), "
                   "task/suite YAMLs (retain's or lm-eval's format), mmlu[_cloze][:SUBJECT][@K], lm-eval:NAME")
    e.add_argument("--split", default="test", choices=["dev", "test"])
    e.add_argument("--out", help="results JSON (per-item scores, for `retain report`); omitted: print only")
    e.add_argument("--limit", type=positive_int, default=None, help="score only the first N items of each task")
    e.add_argument("--batch-size", type=positive_int, default=64, help="requests per forward pass")
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype; auto: bfloat16 where this machine does bf16 natively (a GPU that supports "
                        "it, a CPU with AVX512_BF16 or AMX), else float32. The results file records the one used")
    e.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    e.add_argument("--rolling-bos", default="lm-eval", choices=["lm-eval", "single"],
                   help="perplexity: lm-eval's windows (a second BOS for tokenizers that add one) or one BOS")
    e.set_defaults(func=cmd_eval)


def add_report(sub, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser("report", help="before/after forgetting report", parents=[common])
    r.add_argument("results", nargs="+", help="results.json of the base first, then one or more fine-tunes")
    r.add_argument("--out", required=True)
    r.add_argument("--run", action="append", default=[], help="a training run's output.dir (repeatable): its curves, early "
                   "warnings, retention checks and config (for `retain doctor`'s advice) go into the report. A "
                   "fine-tune's run is also found without it: the run whose final/ its results file scored")
    r.add_argument("--label", action="append", help="a name per results file, in order: --label base,a,b or "
                   "--label base --label a --label b. Files that share a label are one recipe trained with several "
                   "seeds (one file per seed): --label base,ewc,ewc,ewc,lora,lora,lora reports each recipe's mean "
                   "change, a CI that resamples seeds and then items, and each seed's change; a change counts only "
                   "when its CI excludes 0 and every seed moved the same way")
    r.set_defaults(func=cmd_report)


def add_init(sub, common: argparse.ArgumentParser) -> None:
    ini = sub.add_parser("init", help="a starter config and suite fitted to a model and its data", parents=[common])
    ini.add_argument("model", help="model dir or hub id, a .gguf file, or an alias")
    ini.add_argument("--data", help="the training data (any form data.train takes); default: the lab's task")
    ini.add_argument("--dev", help="held-out data; default: 10%% of --data, carved into OUT/data/")
    ini.add_argument("--out", default="my-run", help="where to write config.yaml, suite.yaml (default: my-run)")
    ini.add_argument("--force", action="store_true", help="replace the files of an earlier retain init there")
    ini.set_defaults(func=cmd_init)


def add_card(sub, common: argparse.ArgumentParser) -> None:
    cd = sub.add_parser("card", help="a Hugging Face model card (README.md) for a finished run: base model, data, "
                        "eval results before/after, forgetting verdict", parents=[common])
    cd.add_argument("run_dir", help="the run's output.dir (config.yaml, final/)")
    cd.add_argument("--base", required=True, help="results JSON of the base model (retain eval BASE --out FILE)")
    cd.add_argument("--tuned", required=True, help="results JSON of RUN_DIR/final, on the same items")
    cd.add_argument("--out", help="where to write the card; default RUN_DIR/final/README.md")
    cd.add_argument("--force", action="store_true", help="replace a file already at the card's path")
    cd.add_argument("--push", metavar="REPO", help="then upload the card's folder to this hub repo (needs network, "
                    "hf auth login)")
    cd.set_defaults(func=cmd_card)


def add_demo(sub, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("demo", help="the lab end to end: evaluate, fine-tune twice, report", parents=[common])
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="fewer steps and items (for tests)")
    d.set_defaults(func=cmd_demo)


def add_sweep(sub, common: argparse.ArgumentParser) -> None:
    sw = sub.add_parser("sweep", help="many strategies on one task; table and Pareto front", parents=[common])
    sw.add_argument("config")
    sw.set_defaults(func=cmd_sweep)


def add_sequence(sub, common: argparse.ArgumentParser) -> None:
    sq = sub.add_parser("sequence", help="a sequence of tasks, stage by stage; accuracy matrix, ACC/BWT/FWT",
                        parents=[common])
    sq.add_argument("config", help="the sequence file (SEQ.yaml)")
    sq.add_argument("overrides", nargs="*", help="key=value for the sequence file, e.g. optimizer=reuse")
    sq.set_defaults(func=cmd_sequence)


def add_tune(sub, common: argparse.ArgumentParser) -> None:
    tu = sub.add_parser("tune", help="search recipes (Optuna) for the Pareto front of gain vs forgetting",
                        parents=[common])
    tu.add_argument("config", help="a TUNE.yaml: base config, task, suite, search space, trials")
    tu.add_argument("--backend", choices=["optuna", "ray"], default="optuna",
                    help="optuna: trials one after another here; ray: on a Ray cluster through Ray Tune")
    tu.set_defaults(func=cmd_tune)


def add_merge(sub, common: argparse.ArgumentParser) -> None:
    mg = sub.add_parser("merge", help="interpolate or merge fine-tunes of one base", parents=[common])
    mg.add_argument("base", help="the base model (id, dir, .gguf file, or retain-tiny)")
    mg.add_argument("models", nargs="+", help="fine-tuned model or adapter dirs")
    mg.add_argument("--method", choices=["interpolate", "task_arithmetic", "ties"], default="task_arithmetic")
    mg.add_argument("--alpha", type=float, default=0.5, help="interpolate: weight of the fine-tune")
    mg.add_argument("--scale", type=float, default=1.0, help="task_arithmetic/ties: scale of the merged task vector")
    mg.add_argument("--density", type=float, default=0.2, help="ties: share of each task vector kept")
    mg.add_argument("--out", required=True)
    mg.set_defaults(func=cmd_merge)


def add_config(sub, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("config", help="explain the keys of a run config or a study file", parents=[common])
    # no KEY: the sections; `required` so that a bare `retain config` says what it needs
    c.add_argument("--explain", metavar="KEY", nargs="?", const="", required=True,
                   help="a section (training), key (training.lr, mitigations.lora.r) or mitigations; a study "
                        "kind (sweep, tune, sequence) or key (sweep.seeds); or a study file (configs/sweeps/lab.yaml)")
    c.set_defaults(func=cmd_config)


def add_doctor(sub, common: argparse.ArgumentParser) -> None:
    dr = sub.add_parser("doctor", help="before training: the causes of forgetting in a run config, and a recipe",
                        parents=[common])
    dr.add_argument("config")
    dr.add_argument("overrides", nargs="*", help="dotted key=value, as for train")
    dr.add_argument("--json", action="store_true", help="print the findings as JSON")
    dr.add_argument("--probe", type=int, default=32,
                    help="task examples the base model answers, to find data that contradicts it (0: none)")
    dr.set_defaults(func=cmd_doctor)


# in `retain --help`'s order
COMMANDS = (add_train, add_eval, add_report, add_init, add_card, add_demo, add_sweep, add_sequence, add_tune, add_merge,
            add_config, add_doctor)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retain", description="Fine-tune without forgetting, and measure it.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    # --debug is also accepted after the command (retain train c.yaml --debug); SUPPRESS keeps the global value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub, common)
    return p


def user_error_message(error: BaseException) -> str | None:
    """The message to show for a user error (see retain.core.errors), or None if `error` is a bug."""
    from retain.core.errors import UserError

    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and (error.errno in USER_ERRNOS or type(error) in (
            FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)):
        if error.filename is None or error.strerror is None:  # raised with a message of retain's own
            return str(error)
        hint = OS_HINTS.get(error.errno)
        return f"{error.filename}: {error.strerror}" + (f" — {hint}" if hint else "")
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is 0, EXIT_USER_ERROR, EXIT_BUG or EXIT_INTERRUPTED."""
    return run_command(parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Call `args.func(args)` inside the error boundary (also used by the lab's builder, tools/lab)."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("retain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 (the one boundary: every error ends here, said plainly)
        message = user_error_message(e)
        if message is None:
            traceback.print_exc()
            print(f"retain: internal error: {type(e).__name__}: {e}\n  {REPORT_BUG}", file=sys.stderr)
            return EXIT_BUG
        if args.debug:
            traceback.print_exc()
        print(f"retain: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

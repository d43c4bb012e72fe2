"""docs/continual.md from one command: one task sequence under each continual-learning strategy, measured.

    python tools/continual_study.py configs/sequences/lab.yaml --out docs [--work runs/continual-study]
                                   [--strategies naive,ewc,...]   (`make continual-study` runs all of them)

Each strategy is the sequence file with a few keys changed (STRATEGIES), written to
<work>/sequences/<name>.yaml and run with `retain sequence` semantics into <work>/<name>/; a
finished strategy is not run again (delete its directory to redo it). The document holds only what
these runs measured: every figure is read from their results files.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import shutil
import time
from pathlib import Path

import yaml

from retain.studies.continual import metrics
from retain.studies.continual.summary import estimate, matrix_table
from retain.core.files import atomic_write_text
from retain.evaluation.results import load_results
from retain.core.schema import read_yaml

# name -> (what it is, in the document; the keys of the sequence file it changes; a `common` mapping merges)
STRATEGIES = {
    "naive": ("sequential full fine-tuning, AdamW state reset at every stage (the default); its wall time includes "
              "the multi-task reference", {"multitask": True}),
    "optimizer_reuse": ("as naive, but each stage starts from the previous stage's AdamW state",
                        {"optimizer": "reuse"}),
    "ewc": ("online EWC (weight 0.1, γ 1): importance of each task just learned, accumulated",
            {"common": {"mitigations.ewc": {"weight": 0.1}}}),
    "si": ("online SI (weight 0.1, γ 1), accumulated the same way", {"common": {"mitigations.si": {"weight": 0.1}}}),
    "replay": ("replay buffer: a 200-example reservoir of the earlier stages' examples, 20% of each stage",
               {"replay_buffer": {"size": 200, "ratio": 0.2, "seed": 0}}),
    "isolated": ("one LoRA adapter per task (r 8, α 16, lr 1e-3), each from the base, side by side",
                 {"isolation": {"lora": {"r": 8, "alpha": 16}}, "common": {"training.lr": 1.0e-3}}),
    # The router reads prompts; an adapter trained with the loss on the response only has little reason
    # to model its task's prompts. This variant puts the loss on every token, prompts included.
    "isolated_loss_all": ("as isolated, with the loss on every token (prompt and response), so that each "
                          "adapter also models its task's prompts, which is what the router reads",
                          {"isolation": {"lora": {"r": 8, "alpha": 16}},
                           "common": {"training.lr": 1.0e-3, "data.loss_on": "all"}}),
}


def strategy_file(sequence: dict, name: str, work: Path) -> Path:
    data = copy.deepcopy(sequence)
    for key, value in STRATEGIES[name][1].items():
        data[key] = {**(data.get(key) or {}), **value} if key == "common" else value
    data["output"] = str(work / name)
    return atomic_write_text(work / "sequences" / f"{name}.yaml", yaml.safe_dump(data, sort_keys=False))


def run(sequence_path: Path, names: list[str], work: Path) -> dict[str, float | None]:
    """Run each strategy's sequence; wall seconds of those run now (None: finished before)."""
    from retain.studies.continual import run_sequence

    sequence = read_yaml(sequence_path, "sequence file")
    walls = {}
    for name in names:
        path = strategy_file(sequence, name, work)
        if (work / name / "summary.json").is_file() and (work / name / "wall_seconds").is_file():
            walls[name] = float((work / name / "wall_seconds").read_text())
            continue
        start = time.perf_counter()
        run_sequence(path, progress=False)
        walls[name] = time.perf_counter() - start
        atomic_write_text(work / name / "wall_seconds", f"{walls[name]:.0f}\n")
    return walls


def item_scores(out: Path, tasks: list[str], n_stages: int, routed: bool = False) -> list:
    suffix = ".routed.json" if routed else ".json"
    rows = [load_results(out / "eval" / "base.json")] + [load_results(out / "eval" / f"stage-{k}{suffix}")
                                                          for k in range(1, n_stages + 1)]
    return metrics.item_scores(rows, tasks)


def capability_cells(summary: dict) -> tuple[str, str]:
    """(score-type capabilities significantly worse after the last stage / all, the perplexity change)."""
    worse, total, perplexity = 0, 0, "–"
    for curve in summary["capabilities"].values():
        last = curve["changes"][-1]
        if last["relative"]:
            perplexity = f"×{1 + last['delta']:,.1f}"
            continue
        total += 1
        worse += last["verdict"] == "worse"
    return f"{worse} of {total}", perplexity


def document(sequence_path: Path, work: Path, names: list[str], walls: dict, figures: dict[str, str]) -> str:
    import json

    summaries = {n: json.loads((work / n / "summary.json").read_text()) for n in names}
    first = summaries[names[0]]
    tasks, stages, T = first["tasks"], first["stages"], len(first["stages"])
    seq = yaml.safe_load(Path(work / "sequences" / f"{names[0]}.yaml").read_text())
    stage_cfg = yaml.safe_load(Path(seq["base"]).read_text())["training"]
    scores = {n: item_scores(work / n, tasks, T) for n in names}
    resamples = seq.get("resamples", 2000)
    lines = [
        "# Continual learning on the lab: a sequence of three narrow tasks",
        "",
        f"Generated by `make continual-study` (`python tools/continual_study.py {sequence_path} --out docs`) on "
        f"{datetime.date.today().isoformat()}, on a 2-core CPU shared with other jobs; one run per strategy "
        f"(seed 0). Strategies measured: {', '.join(names)}.",
        "",
        f"The sequence: {' → '.join(f'{s} (`{t}`)' for s, t in zip(stages, tasks))}; each stage trains "
        f"{stage_cfg['max_steps']} steps of batch {stage_cfg['batch_size']} at lr {stage_cfg['lr']} (full "
        f"fine-tuning of retain-tiny unless the strategy says otherwise), starting from the previous stage's weights. "
        f"After the base model and after every stage, each task and the lab's capability suite are scored on "
        f"{first['limit'] or 'all'} test items per task. Scores are exact match in points. ACC is the mean "
        f"final score over the three tasks; BWT the mean change of a task from just after its own stage to the end "
        f"(negative: forgotten); FWT what earlier stages did for a task before its own stage, against the base; "
        f"forgetting the best earlier score minus the final one. Brackets: 95% paired-bootstrap CIs "
        f"({resamples} resamples of the items, the same items in every row and strategy)."
        + (" FWT is 0 for every strategy: no task's answer format is produced before its own stage, so "
           "exact match cannot transfer forward here." if all(summaries[n]["fwt"]["value"] == 0 for n in names)
           else ""),
        "",
        "| strategy | ACC | BWT | FWT | forgetting | ACC − naive | capabilities worse at the end | perplexity (english) at the end | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        s = summaries[n]
        gap = "–" if n == "naive" or "naive" not in names else estimate(
            metrics.compare(scores[n], scores["naive"], resamples, names=("acc",))["acc"])
        worse, perplexity = capability_cells(s)
        wall = f"{walls[n] / 60:.0f} min" if walls.get(n) else "–"
        lines.append(f"| {n} | {estimate(s['acc'], signed=False)} | {estimate(s['bwt'])} | {estimate(s['fwt'])} | "
                     f"{estimate(s['forgetting'])} | {gap} | {worse} | {perplexity} | {wall} |")
        if "routed" in s:
            r = s["routed"]
            lines.append(f"| {n}, routed | {estimate(r['acc'], signed=False)} | {estimate(r['bwt'])} | "
                         f"{estimate(r['fwt'])} | {estimate(r['forgetting'])} | – | – | – | |")
    reference = summaries.get("naive", {}).get("multitask")
    if reference:
        gap = metrics.compare(item_scores_multitask(work / "naive", tasks), scores["naive"], resamples, names=("acc",))
        lines.append(f"| multi-task reference | {estimate(reference['acc'], signed=False)} | – | – | – | "
                     f"{estimate(gap['acc'])} | – | – | |")
    lines += findings(names, scores, summaries, resamples)
    lines += ["", "What each strategy is:", ""] + [f"- **{n}**: {STRATEGIES[n][0]}" for n in names]
    if reference:
        lines.append("- **multi-task reference**: one run of the first stage's config on the union of the three "
                     "training sets, for as many steps as the three stages together (the upper bound a sequence "
                     "is measured against)")
    lines += ["", "Read with care:", "",
              "- One run per strategy (seed 0): the intervals are over test items, not over training seeds.",
              "- Each strategy is one untuned setting (EWC and SI weight 0.1, a 200-example buffer at 20%, LoRA r 8 "
              "at lr 1e-3 for as many steps as full fine-tuning); a tuned one may rank differently.",
              "- The tasks' test items are facts the stage trained on (as for city_country): a score says a task "
              "was learned and kept, not that it generalises.",
              "- With isolated adapters picked by task id, the capability suite has no task id and runs on the base "
              "model: its 0 capabilities worse is by construction. The routed rows send capability prompts to "
              "whichever adapter the router picks; their scores are in `<work>/<strategy>/eval/stage-3.routed.json`."]
    lines += optimizer_section(names, scores, summaries, resamples)
    lines += ["", "## Accuracy matrices", "", "Rows: the model after each stage; columns: the tasks (points)."]
    for n in names:
        lines += ["", f"**{n}**", "", *matrix_table(summaries[n]["matrix"], stages, tasks)]
        if "routed" in summaries[n]:
            r = summaries[n]["routing"]
            lines += ["", f"**{n}, adapter picked by the router** (the adapter, or the base, with the lowest "
                          "perplexity on the prompt)", "", *matrix_table(summaries[n]["routed"]["matrix"], stages, tasks),
                      "", "Routing accuracy after the last stage (share of items sent to their task's adapter; "
                          "for the capability suite, to the base): " + ", ".join(
                              f"{t} {100 * v:.0f}%" for t, v in r["per_task"].items()) + ".",
                      "", "Where the router sent each task's items after the last stage: " + "; ".join(
                          f"{t}: {routed_to(work / n, T, t)}" for t in tasks) + "."]
    lines += ["", "## Figures", ""] + [f"![{caption}]({file})" for file, caption in figures.items()]
    lines += ["", "Per-stage capability tables with CIs: `<work>/<strategy>/summary.md` (work: "
                  f"`{work}`)."]
    return "\n".join(lines) + "\n"


def findings(names: list[str], scores: dict, summaries: dict, resamples: int) -> list[str]:
    """Sentences read off the table: which differences from naive fine-tuning the CIs resolve."""
    if "naive" not in names:
        return []
    lines = ["", "What the intervals resolve (against naive sequential fine-tuning, paired):", ""]
    for n in names:
        if n == "naive":
            continue
        diff = metrics.compare(scores[n], scores["naive"], resamples)
        resolved = [f"{key.upper() if key != 'forgetting' else key} {estimate(e)}" for key, e in diff.items()
                    if e["ci_low"] > 0 or e["ci_high"] < 0]
        lines.append(f"- {n}: " + ("; ".join(resolved) if resolved else "no difference the CIs resolve"))
    best = max(names, key=lambda n: summaries[n]["acc"]["value"])
    lines.append(f"- highest ACC: {best} ({estimate(summaries[best]['acc'], signed=False)})")
    return lines


def routed_to(out: Path, n_stages: int, task: str) -> str:
    from collections import Counter

    items = load_results(out / "eval" / f"stage-{n_stages}.routed.json")["tasks"][task]["items"]
    return ", ".join(f"{name} {count}" for name, count in Counter(i["routed_to"] for i in items).most_common())


def item_scores_multitask(out: Path, tasks: list[str]) -> list:
    return metrics.item_scores([load_results(out / "eval" / "multitask.json")], tasks)


def optimizer_section(names: list[str], scores: dict, summaries: dict, resamples: int) -> list[str]:
    if not {"naive", "optimizer_reuse"} <= set(names):
        return []
    diff = metrics.compare(scores["optimizer_reuse"], scores["naive"], resamples)
    return ["", "## Optimizer state across stages: reset vs reuse", "",
            "Reuse minus reset (paired, the same items): " + "; ".join(
                f"{name.upper() if name != 'forgetting' else name} {estimate(e)}" for name, e in diff.items()) + ". "
            "An interval that includes 0 means this lab cannot tell the two apart."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sequence", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--work", type=Path, default=Path("runs/continual-study"))
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated names of STRATEGIES")
    args = parser.parse_args(argv)
    names = [n for n in args.strategies.split(",") if n]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown} (known: {', '.join(STRATEGIES)})")
    walls = run(args.sequence, names, args.work)
    figures = {}
    for n, file, caption in (("naive", "heatmap.png", "accuracy matrix, naive sequential fine-tuning"),
                             ("naive", "capabilities.png", "lab capabilities after each stage, naive"),
                             ("isolated", "heatmap.png", "accuracy matrix, isolated adapters: task id and router")):
        source = args.work / n / file
        if n in names and source.is_file():
            target = args.out / f"continual-{n}-{file}"
            shutil.copyfile(source, target)
            figures[target.name] = caption
    path = atomic_write_text(args.out / "continual.md", document(args.sequence, args.work, names, walls, figures))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

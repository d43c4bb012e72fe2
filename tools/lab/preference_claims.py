"""The seeds' claims about preference and reward training, measured on the lab: docs/claims-preference.md,
and the same table in docs/claims.md (between the preference-claims marker lines, kept by tools.lab.docs).

    python -m tools.lab.preference_claims [--out runs/preference-claims] [--docs docs]   (from the repo root)

Runs what is missing (each a `retain train` then `retain eval --suite lab,qa_preference`, one after the
other), every run with each training seed of `--seeds` (default 0 1 2: sampling and data order; the GRPO runs'
SFT start is one run, seed 0, shared by all), then compares pairs of runs that differ in one thing, as
docs/claims.md does: the retained-capability score (exact match / accuracy pooled over the lab's fact, choice and
arithmetic tasks, test split) of run B minus run A on the same items, seed s against seed s, with a 95% CI that
resamples seeds and, within them, items (retain.evaluation.compare.retained_change), and each seed's value. A
claim is supported only when that CI excludes 0 and every seed moved the predicted way.

Each claim holds one thing fixed beside what it varies, and the table shows how well: DPO runs are compared
at their held-out preference accuracy (pairs of countries DPO never saw), GRPO runs at their final reward.

The qa_preference GRPO runs start from the SFT stage (configs/qa_preference_sft.yaml): retain-tiny never
samples the answer template by itself, so a reward for it would have nothing to reinforce. The template vs
knowledge runs (configs/grpo_capitals.yaml) start from retain-tiny, on prompts it knows the answers to.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from pathlib import Path

import torch

from retain.core.files import atomic_write_text
from retain.model.loading import load_for_eval
from retain.core.paths import LAB_DATA_DIR
from retain.objectives.dpo import DPO
from retain.preference.data import collate_pairs, load_pairs
from retain.preference.options import DPOOptions
from retain.evaluation.compare import claim_verdict, retained_change
from retain.evaluation.results import load_results
from retain.report.build import compare
from retain.cli import DEBUG_HELP, run_command
from retain.core.errors import UserError
from retain.core.files import read_metrics
from retain.report.reward_hacking import curve, hacking_lines
from retain.report.reward_hacking import ends as trend_ends
from tools.lab.docs import BEGIN_KEPT, END_KEPT, kept_span, pts

TASK, SUITE = "qa_preference", "lab,qa_preference"
HELDOUT_PAIRS = LAB_DATA_DIR / "tasks" / "qa_preference" / "heldout_pairs.jsonl"
COMMAND = "python -m tools.lab.preference_claims"
GRPO = ("configs/grpo.yaml", "model.name={out}/sft/final/merged", "training.lr=2e-3")
TEMPLATE_ONLY = ("configs/grpo_capitals.yaml", "training.grpo.rewards.facts.weight=0")
DPO_RUN = ("configs/dpo.yaml", "training.dpo.sft_weight=0")
# name -> (config, overrides; the run its gain is measured from)
RUNS = {
    "sft": (("configs/qa_preference_sft.yaml",), "base"),
    "grpo_template": (TEMPLATE_ONLY, "base"),
    "grpo_template_facts": (("configs/grpo_capitals.yaml",), "base"),
    # a shorter run, whose final reward lands near its partner's: the comparison at (nearly) matched reward
    "grpo_template_12steps": ((*TEMPLATE_ONLY, "training.max_steps=12"), "base"),
    "grpo_kl0": ((*GRPO, "training.max_steps=40", "training.grpo.kl_coef=0"), "sft"),
    "grpo_kl05": ((*GRPO, "training.max_steps=40", "training.grpo.kl_coef=0.5"), "sft"),
    "grpo_kl0_12steps": ((*GRPO, "training.max_steps=12", "training.grpo.kl_coef=0"), "sft"),
    "dpo_beta0.01": ((*DPO_RUN, "training.epochs=4", "training.dpo.beta=0.01"), "base"),
    "dpo_beta1": ((*DPO_RUN, "training.epochs=4", "training.dpo.beta=1.0"), "base"),
    # trained twice as long: its held-out preference accuracy lands near (above) the large β's
    "dpo_beta0.01_8epochs": ((*DPO_RUN, "training.epochs=8", "training.dpo.beta=0.01"), "base"),
}
SEEDS = (0, 1, 2)
# (claim, run A, run B, +1: supported when B retains more than A)
CLAIMS = [
    ("A reward that checks only the template forgets more than one with a knowledge-correctness term",
     "grpo_template", "grpo_template_facts", +1),
    ("… the same, against a 12-step template-only run (nearer B's format reward)", "grpo_template_12steps",
     "grpo_template_facts", +1),
    ("RL without a KL penalty forgets more than with a strong one (kl_coef 0 vs 0.5)", "grpo_kl0", "grpo_kl05", +1),
    ("… the same, against a 12-step kl_coef 0 run (nearer B's final reward)", "grpo_kl0_12steps", "grpo_kl05", +1),
    ("DPO with a small β (a weak implicit KL leash) forgets more than with a large β", "dpo_beta0.01", "dpo_beta1", +1),
    ("… the same, against an 8-epoch small-β run (nearer B's preference accuracy)", "dpo_beta0.01_8epochs",
     "dpo_beta1", +1),
]


def seeded(name: str, seed: int) -> str:
    """The run of `name` with training seed `seed`: the name itself for seed 0 (and for the shared starts)."""
    return name if seed == 0 or name in ("base", "sft") else f"{name}_seed{seed}"


def run_of(run: str) -> tuple[tuple[str, ...], str]:
    """(config and overrides, the run it starts from) of a run name, seeded ones included."""
    name, _, seed = run.partition("_seed")
    config, start = RUNS[name]
    return ((*config, f"training.seed={seed}") if seed else config), start


def retain_cli(*args: str) -> None:
    code = subprocess.run([sys.executable, "-m", "retain", *args]).returncode
    if code != 0:  # its own message is above; a rerun resumes from the runs already finished
        raise UserError(f"`retain {' '.join(args)}` exited with status {code} (its message is above)")


def final_weights(out: Path, name: str) -> Path:
    final = out / name / "final"
    return final / "merged" if (final / "merged").is_dir() else final


def ensure(out: Path, name: str) -> Path:
    """`out/NAME.json`, the run's scores (training and scoring it first if missing)."""
    results = out / f"{name}.json"
    if results.is_file():
        return results
    if name == "base":
        retain_cli("eval", "retain-tiny", "--suite", SUITE, "--out", str(results))
        return results
    (config, *overrides), start = run_of(name)
    ensure(out, start)
    if not (out / name / "final").is_dir():
        retain_cli("train", config, *(o.format(out=out) for o in overrides), f"output.dir={out / name}",
                   "training.report_to=[]", "--overwrite")
    retain_cli("eval", str(final_weights(out, name)), "--suite", SUITE, "--out", str(results))
    return results


@functools.cache  # a run in two claims is scored once
@torch.no_grad()
def preference_accuracy(weights: Path, reference: str = "retain-tiny", pairs: Path = HELDOUT_PAIRS) -> float:
    """The share of `pairs` whose implicit reward log π/π_ref is higher for the chosen answer than for the
    rejected one: π the run's weights, π_ref the model it started from (DPO's own accuracy, on other pairs)."""
    policy, tokenizer = load_for_eval(str(weights))
    dpo = DPO(DPOOptions(), replay=False, batch_size=32)
    dpo.setup(load_for_eval(reference)[0], None, [], None)  # the reference: a frozen copy of the base
    examples = load_pairs(pairs, tokenizer, 64).examples
    hits = []
    for i in range(0, len(examples), 32):
        batch = collate_pairs(examples[i: i + 32], tokenizer.pad_token_id)
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hits += dpo.pair_losses(logits, policy, batch)[1]["accuracy"].tolist()
    return sum(hits) / len(hits)


def logged(run_dir: Path, key: str) -> list[float]:
    return curve(read_metrics(run_dir), key)


def last(run_dir: Path, key: str) -> float:
    values = logged(run_dir, key)
    if not values:
        raise UserError(f"{run_dir / 'metrics.jsonl'}: no {key} logged (an interrupted run? delete {run_dir} and "
                        "rerun)")
    return values[-1]


def ends(run_dir: Path, key: str) -> str:
    """start → end as the report's reward-hacking flag reads them: the means of the first and last fifth."""
    values = logged(run_dir, key)
    return "{:.3g} → {:.3g}".format(*trend_ends(values)) if values else "—"


def shown_metrics(run: str) -> tuple[list[str], str]:
    """(the reward keys, the KL key) a run's row shows, start → end."""
    if run.startswith("dpo"):
        return ["dpo/reward_margin"], "dpo/logratio_chosen"
    if run.startswith("grpo_template"):
        return ["grpo/reward", "reward/template", "reward/facts"], "grpo/kl"
    return ["grpo/reward"], "grpo/kl"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def matched(out: Path, a: list[str], b: list[str]) -> str:
    """What the two recipes were held at, each the mean over its seeds' runs: DPO's preference accuracy, or GRPO's
    final reward."""
    if a[0].startswith("dpo"):
        held_out = [mean([preference_accuracy(final_weights(out, r)) for r in runs]) for runs in (a, b)]
        train = [mean([last(out / r, "dpo/accuracy") for r in runs]) for runs in (a, b)]
        return (f"held-out pref. acc. {held_out[0]:.0%} / {held_out[1]:.0%} (train pairs, last log window: "
                f"{train[0]:.0%} / {train[1]:.0%})")
    key = "reward/template" if a[0].startswith("grpo_template") else "grpo/reward"
    return f"final {key} {mean([last(out / r, key) for r in a]):.3g} / {mean([last(out / r, key) for r in b]):.3g}"


def task_gains(out: Path, runs: list[str], results: list[dict]) -> float:
    """qa_preference exact match against each run's start, the mean over seeds."""
    return mean([compare(load_results(out / f"{run_of(r)[1]}.json"), res)["tasks"][TASK]["delta"]
                 for r, res in zip(runs, results)])


def claim_rows(out: Path, seeds: tuple[int, ...]) -> list[str]:
    rows = ["| claim | run A | run B | B − A retained (pts) [95% CI: seeds, then items] | per seed | held at (A / B) "
            "| task gain A / B (pts) | reward A; B (start → end, seed 0) | KL A; B (start → end, seed 0) | result |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for claim, a, b, sign in CLAIMS:
        runs = {x: [seeded(x, s) for s in seeds] for x in (a, b)}
        results = {x: [load_results(ensure(out, r)) for r in runs[x]] for x in (a, b)}
        c, _ = retained_change(results[a], results[b], TASK)  # seed s of A against seed s of B
        per_seed = ", ".join(pts(x) for x in c.per_seed)
        if a.startswith("grpo_template"):  # no qa_preference task here: the reward is the task
            gains = "— (the reward is the task)"
        else:
            gains = " / ".join(pts(task_gains(out, runs[x], results[x])) for x in (a, b))
        keys, kl = shown_metrics(a)
        rewards = "; ".join(f"{k}: {ends(out / a, k)}; {ends(out / b, k)}" for k in keys)
        rows.append(f"| {claim} | {a} | {b} | {pts(c.delta)} [{pts(c.ci_low)}, {pts(c.ci_high)}] | {per_seed} | "
                    f"{matched(out, runs[a], runs[b])} | {gains} | {rewards} | {kl}: {ends(out / a, kl)}; "
                    f"{ends(out / b, kl)} | {claim_verdict(c, sign)} |")
    return rows


def with_block(text: str, block: list[str]) -> str:
    """claims.md with `block` (marker lines included) in place of the old block, or else before the line
    starting "Strategy definitions" (at the end if there is none)."""
    lines = text.splitlines()
    span = kept_span(lines)
    if span:
        lines[span] = block
    else:
        at = next((i for i, line in enumerate(lines) if line.startswith("Strategy definitions")), len(lines))
        lines[at:at] = [*block, ""]
    return "\n".join(lines) + "\n"


INTRO = ("Each claim compares two recipes that differ in one thing, each run with training seeds {seeds}; the "
         "measure is the retained-capability score (exact match / accuracy pooled over the lab's fact, choice and "
         "arithmetic tasks, test split) of recipe B minus recipe A on the same items, seed s against seed s, with a "
         "95% CI that resamples seeds and, within them, items, and each seed's value; a claim is supported only when "
         "the CI excludes 0 and every seed moved the predicted way. *Held at (A / B)*: where each recipe ended on "
         "what the claim should hold equal, the mean over its seeds — DPO's preference accuracy on 86 held-out pairs "
         "(countries it never trained on; the share whose implicit reward log π/π_ref is higher for the chosen "
         "answer), GRPO's final reward (the mean of the last log window). A claim's second row (…) compares recipe B "
         "with a recipe A of another length whose reward or preference accuracy lies nearer B's (GRPO: 12 steps "
         "instead of 40; DPO: 8 epochs instead of 4): a claim that holds in both rows holds at matched conditions; "
         "one that holds only in its first row is about how far recipe A was let go, not about the leash or the "
         "reward alone. Reward and KL *start → end* (seed 0's runs): the means of the first and last fifth of the "
         "logged values, as the report's reward-hacking flag reads them. Task gain: qa_preference exact match against "
         "the run's start (retain-tiny for DPO, the SFT stage for the KL runs), the mean over seeds.")

TEMPLATE_VS_KNOWLEDGE = (
    "The template vs knowledge runs (configs/grpo_capitals.yaml, from retain-tiny): GRPO on 'The capital of X is' "
    "for the 61 countries of the suite's dev split — the phrasing retain-tiny knows its capitals in (84% of its "
    "samples at temperature 1 name the right one), so the knowledge term fires from the first step; the suite's "
    "test countries are never prompted. The format term asks for a short answer, one capitalised word of at most 6 "
    "letters and a period: two thirds of the capitals are longer, so a wrong but short capital satisfies it where "
    "the right one cannot — the shortcut. Run A logs the knowledge term at weight 0 (paid nothing), run B pays it "
    "at weight 1; KL coefficient, learning rate, steps and seed are the same. B cannot reach A's format reward "
    "without dropping its facts (it keeps them by declining the shortcut), so the matched row shortens A instead.")


def write_doc(out: Path, docs: Path, seeds: tuple[int, ...] = SEEDS) -> Path:
    rows = claim_rows(out, seeds)
    intro = INTRO.format(seeds=", ".join(map(str, seeds)))
    lines = ["# Preference and reward training: claims from practitioners' accounts, on the lab", "",
             f"Generated by `{COMMAND}`. {intro}", "", *rows, "", TEMPLATE_VS_KNOWLEDGE]
    runs = [seeded(name, s) for name in RUNS if name != "sft" for s in seeds]
    flags = [line for run in runs for line in hacking_lines(
        [out / run], {run: compare(load_results(out / f"{run_of(run)[1]}.json"), load_results(ensure(out, run)))})]
    lines += ["", "What `retain report START.json RUN.json --run RUN` flags (reward up while a capability fell "
              "significantly, against the run's start), every run of every seed:", ""]
    lines += [f"- {line}" for line in flags] or ["- nothing"]
    others = ", ".join(str(s) for s in seeds if s)
    lines += ["", "Runs (overrides of the config named" + (f"; every run but sft, the GRPO runs' shared start, also "
              f"with `training.seed=S` for seeds {others}, as `<run>_seed<S>`" if others else "") + "):", ""]
    lines += [f"- {name}: `{' '.join(config)}` (from {start})" for name, (config, start) in RUNS.items()]
    path = docs / "claims-preference.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    block = [BEGIN_KEPT, "", "## Preference and reward training", "", f"Generated by `{COMMAND}` (runs, flags and "
             f"details: docs/claims-preference.md). {intro}", "", *rows, "", END_KEPT]
    claims = docs / "claims.md"
    atomic_write_text(claims, with_block(claims.read_text() if claims.is_file() else "", block))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/preference-claims"))
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="training seeds of every run")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.set_defaults(func=lambda args: print(write_doc(args.out.resolve(), args.docs, tuple(args.seeds))) or 0)
    return run_command(parser.parse_args(argv))  # retain's error boundary: a failed run is exit 2, not a traceback


if __name__ == "__main__":
    sys.exit(main())

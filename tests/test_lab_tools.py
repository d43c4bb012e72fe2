"""The lab's builders live outside the installed package (tools/lab) and share retain's error boundary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import retain

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_package_holds_no_lab_builder():
    lab = Path(retain.__file__).parent / "lab"
    assert not {"corpus.py", "pretrain.py", "card.py", "docs.py"} & {p.name for p in lab.glob("*.py")}


def test_lab_docs_without_sweeps_is_a_user_error():
    done = subprocess.run([sys.executable, "-m", "tools.lab", "docs"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "name the finished sweeps' files" in done.stderr
    assert "Traceback" not in done.stderr


# ---- docs: how well the early warnings predict forgetting (tools.lab.warnings_vs_forgetting) ---------------

def test_spearman_is_one_for_any_monotone_signal_minus_one_reversed_and_averages_ties():
    import numpy as np

    from tools.lab.warnings_vs_forgetting import average_ranks, spearman

    forgetting = [0.5, 3.0, 10.0, 40.0, 79.0]
    assert spearman(np.exp(np.array(forgetting) / 10), forgetting) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([5, 4, 3, 2, 1], forgetting) == pytest.approx(-1.0)
    assert average_ranks(np.array([2.0, 1.0, 2.0, 3.0])).tolist() == [2.5, 1.0, 2.5, 4.0]
    # with ties: the Pearson correlation of the average ranks, by hand: ranks x (1.5, 1.5, 3, 4), y (1, 2, 3, 4)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))  # a constant signal ranks nothing
    # along the last axis, as the bootstrap uses it: (2, 4) -> (2,)
    assert spearman([[1, 2, 3, 4], [4, 3, 2, 1]], [[1, 2, 3, 4], [1, 2, 3, 4]]).tolist() == pytest.approx([1.0, -1.0])


def test_the_bootstrap_ci_holds_rho_and_shrinks_with_more_runs():
    import numpy as np

    from tools.lab.warnings_vs_forgetting import rank_correlation

    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.7, size=40)
    few, many = rank_correlation(x[:10], y[:10]), rank_correlation(x, y)
    assert few.n == 10 and many.n == 40
    for c in (few, many):
        assert c.ci_low < c.rho < c.ci_high
    assert many.ci_high - many.ci_low < few.ci_high - few.ci_low and many.ci_low > 0
    perfect = rank_correlation([1, 2, 3, 4, 5], [2, 4, 8, 16, 32])
    assert (perfect.rho, perfect.ci_low, perfect.ci_high) == pytest.approx((1.0, 1.0, 1.0))


def test_runs_the_signal_cannot_see_to_the_end_are_left_out():
    from tools.lab.warnings_vs_forgetting import Run, blind_spot, correlate, misplaced

    assert blind_spot({"interpolate": None}) == "`interpolate` changes the weights after training"
    assert "earlier check" in blind_spot({"retention": None, "early_warnings": None})
    assert blind_spot({"lora": None, "replay": None, "early_warnings": None}) is None

    def run(name, signal, forgetting, blind=None, peft=None):
        checks = [{"step": s, "warn/kl_general": signal * s, "warn/drift/all": signal * s} for s in (20, 40, 60, 80)]
        return Run("sweep", name, forgetting, checks, blind, peft)

    runs = [run("a", 1, 1), run("b", 2, 2), run("c", 3, 3), run("d", 4, 4), run("wise", 9, 0, blind="interpolates"),
            run("lora", 0.5, 50, peft="lora")]
    assert runs[0].value("kl_general", None) == 20 and runs[0].value("kl_general", 0.5) == 40
    assert runs[0].value("kl_general", 0.25) == 20 and runs[0].value("kl_general", 1.0) == 80
    kl, drift = correlate(runs, "kl_general", 1.0), correlate(runs, "drift/all", 1.0)
    assert kl.n == 5 and drift.n == 4 and drift.rho == pytest.approx(1.0)  # PEFT counts for the KL, not for drift
    assert kl.rho < 1  # the adapter run with the smallest KL forgot the most
    # ... and is the one the KL misplaces most, in points: ranked last by it, where the others lost 1 point
    assert misplaced(runs, "kl_general") == (runs[5], 5, 1, 5)


def test_docs_keep_the_preference_claims_block_verbatim():
    from tools.lab.docs import BEGIN_KEPT, END_KEPT, preserved_block

    block = [BEGIN_KEPT, "| DPO forgets less than SFT | pref | sft | dpo | +1.0 [+0.1, +2.0] | supported |", "",
             END_KEPT]
    previous = "\n".join(["# claims", "| old row |", "", *block, "", "Strategy definitions: ...", ""])
    assert preserved_block(previous) == block
    assert preserved_block("# claims\n\nStrategy definitions: ...\n") == []
    assert preserved_block(f"# claims\n{BEGIN_KEPT}\nhalf a block\n") == []  # no END: nothing is guessed


def test_the_docs_section_pools_a_config_run_in_two_sweeps_once_and_lists_what_it_left_out():
    from tools.lab.warnings_vs_forgetting import Run, section

    def run(sweep, name, signal, forgetting, config=None, **kw):
        checks = [{"step": s, "warn/kl_general": signal * s, "warn/kl_task": signal, "warn/drift/all": signal * s}
                  for s in (20, 40, 60, 80)]
        return Run(sweep, name, forgetting, checks, config=config or f"{sweep}/{name}", **kw)

    lab = [run("lab", f"r{i}", i, i) for i in range(1, 5)] + [run("lab", "gentle_twin", 0.5, 0.5, config="same")]
    gentle = [run("gentle", "unprotected", 0.5, 0.5, config="same"), run("gentle", "g1", 5, 5),
              run("gentle", "g2", 6, 6), run("gentle", "wise", 9, 0, blind="`interpolate` changes the weights"),
              run("gentle", "adapter", 0.1, 7, peft="lora")]
    text = "\n".join(section(lab + gentle, "CMD"))
    pooled = next(line for line in text.splitlines() if line.startswith("| `kl_general` | all sweeps |"))
    assert pooled.split(" | ")[2] == "8"  # 5 lab + 3 gentle: its twin of a lab run counts once, wise not at all
    assert "unprotected (gentle) is the same config as gentle_twin (lab) and counts once" in text
    assert "wise (gentle: `interpolate` changes the weights)" in text
    assert "drift rows only, because under PEFT drift is the adapter's own growth: adapter (gentle)" in text
    drift = next(line for line in text.splitlines() if line.startswith("| `drift/all` | all sweeps |"))
    assert drift.split(" | ")[2] == "7"  # the adapter run counts for the KLs, not for drift
    assert "Reproduce: `CMD`" in text


def test_a_claim_at_matched_gain_is_b_minus_a_seed_by_seed(tmp_path):
    from retain.studies.sweep import SweepConfig
    from tools.lab.docs import CLAIMS, matched_difference

    def results(task_right: int, facts_right: int, n: int = 40) -> dict:  # rights out of 10, on n items
        def task(capability, right):
            return {"kind": "generation", "capability": capability, "primary_metric": "exact_match",
                    "lower_is_better": False, "chance": 0.0, "n": n, "metrics": {"exact_match": right / 10},
                    "items": [{"id": i, "exact_match": float(i < right * n // 10)} for i in range(n)]}
        return {"split": "test",
                "tasks": {"skill": task("task: skill", task_right), "facts": task("facts", facts_right)}}

    def write(path, r):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))

    sweep = SweepConfig(output=str(tmp_path), base="base.yaml", task="skill", suite="facts", seeds=[0], line=[0.5],
                        strategies={"unprotected": {}, "lora": {}, "lr_1e-4": {}})
    write(tmp_path / "base.json", results(0, 10))
    for name, half, end in (("unprotected", results(4, 8), results(8, 4)), ("lora", results(4, 9), results(8, 6))):
        write(tmp_path / "line" / name / "alpha-0.5.json", half)
        write(tmp_path / "results" / f"{name}.json", end)
    # at 76 points of task gain (95% of 80): unprotected lost 56 points of facts there, LoRA 37
    cell = matched_difference(sweep, "unprotected", "lora", +1)
    assert cell.startswith("+19.0 [") and cell.endswith("(+19.0): supported")
    assert matched_difference(sweep, "unprotected", "lora", -1).endswith(": contradicted")
    assert matched_difference(sweep, "unprotected", "lr_1e-4", +1) == "—"  # its line is not scored
    # the learning-rate-confounded LoRA claim has a partner at one learning rate
    assert ("lora_low_lr_1e-4", "lr_1e-4") in {(c[1], c[2]) for c in CLAIMS}


def _lab_results(task_right: int, facts_right: int, n: int = 40) -> dict:
    """A results file of the lab's shape: qa_preference (the task) and one retained fact task, n items each."""
    def generation(right: int, capability: str) -> dict:
        items = [{"id": i, "exact_match": float(i < right)} for i in range(n)]
        return {"kind": "generation", "capability": capability, "primary_metric": "exact_match",
                "lower_is_better": False, "chance": 0.0, "n": n, "metrics": {"exact_match": right / n},
                "items": items}
    return {"model": "tiny", "dtype": "float32", "split": "test", "limit": None,
            "tasks": {"capital_recall": generation(facts_right, "country facts"),
                      "qa_preference": generation(task_right, "qa template")}}


def test_every_preference_claim_is_judged_over_seeds_seed_against_seed(tmp_path, monkeypatch):
    """Each claim pairs seed s of run A with seed s of run B: a claim whose seeds all go the predicted way is
    supported; one seed the other way is not shown (with 3 seeds, a draw of that seed alone thrice is 1 in 27, so
    the CI reaches past 0 too); each seed's value is in the row."""
    import tools.lab.preference_claims as pc

    seeds = (0, 1, 2)
    # retained facts (of 40) per seed: B keeps more than A on every seed, except the 12-step GRPO pair (seed 2 flips)
    kept = {"grpo_template": (10, 12, 11), "grpo_template_facts": (30, 31, 29), "grpo_template_12steps": (28, 27, 35),
            "grpo_kl0": (20, 21, 22), "grpo_kl05": (25, 26, 27), "grpo_kl0_12steps": (24, 25, 26),
            "dpo_beta0.01": (5, 6, 7), "dpo_beta1": (15, 16, 17), "dpo_beta0.01_8epochs": (4, 5, 6)}
    for start in ("base", "sft"):
        (tmp_path / f"{start}.json").write_text(json.dumps(_lab_results(0, 40)))
    for name, per_seed in kept.items():
        for seed, facts in zip(seeds, per_seed):
            run = pc.seeded(name, seed)
            (tmp_path / run / "final").mkdir(parents=True)
            (tmp_path / f"{run}.json").write_text(json.dumps(_lab_results(10 + seed, facts)))
            rows = [{"step": s, "grpo/reward": 0.1 * s, "reward/template": 0.1 * s, "reward/facts": 0.5,
                     "grpo/kl": 0.01 * s, "dpo/accuracy": 0.5 + 0.01 * s, "dpo/reward_margin": s,
                     "dpo/logratio_chosen": s} for s in range(1, 6)]
            (tmp_path / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(pc, "preference_accuracy", lambda weights: 0.75)
    monkeypatch.setattr(pc, "retain_cli", lambda *args: pytest.fail(f"nothing to run, got retain {args}"))
    assert pc.seeded("grpo_kl05", 2) == "grpo_kl05_seed2" and pc.seeded("sft", 2) == "sft"
    assert pc.run_of("grpo_kl05_seed2") == ((*pc.RUNS["grpo_kl05"][0], "training.seed=2"), "sft")
    rows = {row.split(" | ")[0].lstrip("| "): row for row in pc.claim_rows(tmp_path, seeds)[2:]}
    first = rows["A reward that checks only the template forgets more than one with a knowledge-correctness term"]
    assert "| +50.0, +47.5, +45.0 |" in first and first.endswith("| supported |")  # (30-10)/40, (31-12)/40, ...
    flipped = rows["… the same, against a 12-step template-only run (nearer B's format reward)"]
    assert "| +5.0, +10.0, -15.0 |" in flipped and flipped.endswith("| not shown (the 95% CI includes 0) |")
    dpo = rows["DPO with a small β (a weak implicit KL leash) forgets more than with a large β"]
    assert "| +25.0, +25.0, +25.0 |" in dpo and "held-out pref. acc. 75% / 75%" in dpo
    assert "| +27.5 / +27.5 |" in dpo  # qa_preference gain from the base, the mean over seeds: (10, 11, 12) of 40

"""The commands a user runs: eval, report, sweep, demo (quick), merge."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from retain.config import load_config
from retain.report.build import headline, ship_verdict
from retain.studies.sweep import run_sweep
from conftest import write_doubling_task


def retain_cli(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "retain", *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_eval_then_report(tiny_model, tmp_path):
    retain_cli("eval", str(tiny_model), "--suite", "capital_recall,currency_choice,english", "--split", "dev",
               "--limit", "5", "--out", str(tmp_path / "a.json"))
    results = json.loads((tmp_path / "a.json").read_text())
    assert set(results["tasks"]) == {"capital_recall", "currency_choice", "english"}
    assert all(len(t["items"]) == 5 for t in results["tasks"].values())
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())  # the same file twice is refused
    proc = retain_cli("report", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "r"))
    assert "no significant forgetting" in proc.stdout
    assert (tmp_path / "r" / "report.html").is_file()


def test_demo_quick_runs_the_whole_lab_and_ends_with_the_verdicts_and_the_report(tmp_path):
    proc = retain_cli("demo", "--quick", "--out", str(tmp_path / "demo"))
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert set(report["comparisons"]) == {"unprotected", "protected"}
    assert "capital_recall" in report["comparisons"]["protected"]["tasks"]
    *_, unprotected, protected, where = proc.stdout.strip().splitlines()
    for line, label in ((unprotected, "unprotected"), (protected, "protected")):
        assert line == ship_verdict(label, report["comparisons"][label])
    assert where.startswith(f"report: {tmp_path / 'demo' / 'report' / 'report.html'}")
    assert "fine-tuning: protected (ewc, lr 0.0001)" in proc.stdout  # the recipe docs/tune.md recommends
    # each run logged retention checks that only measured (no budget claimed), drawn as forgetting over training
    page = (tmp_path / "demo" / "report" / "report.html").read_text()
    assert "alt='forgetting over training'" in page and "none held to a budget" in page
    for name in ("unprotected", "protected"):
        checks = json.loads((tmp_path / "demo" / name / "retention.json").read_text())
        assert checks["outcome"] is None and [c["step"] for c in checks["checks"]] == [6]


@pytest.mark.parametrize("grade, advice", [("none", "ship it"), ("mild", "ship it"), ("moderate", "review before"),
                                           ("severe", "do not ship"), ("catastrophic", "do not ship")])
def test_a_verdict_says_how_bad_and_whether_to_ship(grade, advice):
    comparison = {"capabilities": {}, "forgetting": {"severity": grade, "worst": None if grade == "none" else "x"}}
    line = ship_verdict("run", comparison)
    assert line.startswith("run: no significant forgetting — " if grade == "none" else f"run: {grade} forgetting "
                           "(worst: x) — ") and advice in line
    assert headline("run", comparison).startswith(line.split(" — ")[0] + " — ")


def test_sweep_runs_each_strategy_once_and_names_the_front(make_config, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(make_config(training={"max_steps": 3})))
    write_doubling_task(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": str(base), "task": str(tmp_path / "task.yaml"), "suite": "capital_recall,currency_choice",
        "output": str(tmp_path / "sweep"), "limit": 4, "seeds": [0],
        "strategies": {"plain": {}, "lora": {"mitigations.lora": {"r": 2}}}, "grid": {"training.lr": [1e-3, 1e-2]}},
        sort_keys=False))
    from retain.studies.sweep import expand, load_sweep

    assert list(expand(load_sweep(sweep))) == ["plain", "lora", "lr=0.001", "lr=0.01"]
    no_grid = load_sweep(sweep).__class__(**{**load_sweep(sweep).__dict__, "grid": {}})
    assert list(expand(no_grid)) == ["plain", "lora"]  # no grid: no extra, unnamed strategy
    summary = run_sweep(sweep, progress=False)
    assert set(summary["rows"]) == {"plain", "lora", "lr=0.001", "lr=0.01"}
    assert summary["pareto_front"] and set(summary["pareto_front"]) <= set(summary["rows"])
    assert (tmp_path / "sweep" / "pareto.png").is_file() and (tmp_path / "sweep" / "summary.md").is_file()
    # each strategy is an ordinary run config a user can train alone
    assert load_config(tmp_path / "sweep" / "configs" / "lora.yaml").mitigations["lora"].r == 2
    mtime = (tmp_path / "sweep" / "results" / "lora.json").stat().st_mtime
    run_sweep(sweep, progress=False)  # finished runs are skipped
    assert (tmp_path / "sweep" / "results" / "lora.json").stat().st_mtime == mtime


def test_merge_interpolates_two_models(tiny_model, make_config, tmp_path):
    import torch
    from safetensors.torch import load_file

    import retain
    from retain.config import config_from_dict

    tuned = retain.train(config_from_dict(make_config()), progress=False).final_dir
    retain_cli("merge", str(tiny_model), str(tuned), "--method", "interpolate", "--alpha", "0.25",
               "--out", str(tmp_path / "merged"))
    base, ft = load_file(str(tiny_model / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    for k in base:
        assert torch.allclose(merged[k], 0.75 * base[k] + 0.25 * ft[k], atol=1e-6), k


def test_merging_soft_prompts_is_a_clear_error_not_a_crash(tiny_model, make_config, tmp_path):
    """Prompt tuning adds virtual tokens and changes none of the base's weights: `retain merge` says so and exits 2
    (it used to crash inside peft), and nothing is written."""
    import retain
    from retain.config import config_from_dict

    config = make_config(mitigations={"prompt_tuning": {"num_virtual_tokens": 4}})
    tuned = retain.train(config_from_dict(config), progress=False).final_dir
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "retain", "merge", str(tiny_model), str(tuned), "--method",
                           "interpolate", "--alpha", "0.5", "--out", str(tmp_path / "merged")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "a prompt_tuning adapter adds virtual tokens and changes none of the base's weights" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "merged").exists()

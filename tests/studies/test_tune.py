"""`retain tune`: the TUNE file is strict, every trial is an ordinary run config, a killed study resumes
without re-running finished trials, the pruner stops a trial that is clearly worse at a dev check, and the
Ray backend gives the same trials and results as the sequential one for a fixed list of trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

optuna = pytest.importorskip("optuna")

import retain.studies.tune.report  # noqa: E402,F401  (its compare is counted below)
import retain.studies.tune.trial as trial_module  # noqa: E402
from conftest import REPO_ROOT, write_jsonl  # noqa: E402
from retain.config import load_config  # noqa: E402
from retain.core.schema import ConfigError  # noqa: E402
from retain.report.build import compare  # noqa: E402
from retain.studies.tune import load_tune, run_tune, trial_name  # noqa: E402

REPO = REPO_ROOT
SUITE = "capital_recall,currency_choice"  # lab tasks with a dev split; the tiny model scores near chance


@pytest.fixture
def study(make_config, tmp_path):
    """write(**tune keys) -> a TUNE.yaml path: the tiny model on `what is a plus b ?`, and a two-way choice task on
    the same questions (its score rises as soon as the model learns the answers)."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(make_config(training={"max_steps": 12, "lr": 3e-2, "log_every": 4})))
    # acc_norm: the random model prefers the longer (two-token) wrong sums; 8 steps at lr 3e-2 teach it the answers
    rows = [{"context": f"what is {a} plus {b} ?", "choices": [f" {a + b}", f" {a + b + 20}"], "gold": 0}
            for a in range(6) for b in range(6)]
    write_jsonl(tmp_path / "sums.jsonl", rows)
    (tmp_path / "sums.yaml").write_text(f"name: sums\nkind: multiple_choice\nmetric: acc_norm\n"
                                        f"data: {{dev: {tmp_path / 'sums.jsonl'}, test: {tmp_path / 'sums.jsonl'}}}\n")

    def write(name: str = "tune.yaml", **keys) -> str:
        data = {"base": str(base), "task": str(tmp_path / "sums.yaml"), "suite": SUITE,
                "output": str(tmp_path / "out"), "trials": 2, "limit": 12, "test_limit": 12, "seed": 0, "seeds": [0],
                "space": {"training.lr": {"float": [1e-4, 3e-2], "log": True},
                          "mitigations.lora": {"choice": ["absent", {"r": 2, "alpha": 4}]}}}
        data.update(keys)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)

    return write


# --- the TUNE file ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"trails": 3}, "trails: unknown key"),
    ({"trials": "many"}, "trials: expected an integer"),
    ({"space": {"training.lr": {"float": [1e-3, 1e-4]}}}, "space.training.lr.float: low must be below high"),
    ({"space": {"training.lr": {"float": [0, 1e-3], "log": True}}}, "space.training.lr.log: a log scale needs low > 0"),
    ({"space": {"training.lr": {"uniform": [1e-4, 1e-3]}}}, "space.training.lr: give exactly one of float, int"),
    ({"space": {"training.lr": {"float": [1e-4, 1e-3], "base": 10}}}, "space.training.lr.base: unknown key"),
    ({"space": {"training.lrr": {"float": [1e-4, 1e-3]}}}, "space.training.lrr: 0.0001 makes an invalid run config"),
    ({"space": {"training.warmup_steps": {"float": [0.5, 10.0]}}}, "training.warmup_steps: expected an integer"),
    ({"space": {"mitigations.interpolate.alpha": {"float": [0.1, 1.5]}}}, "space.mitigations.interpolate.alpha: 1.5"),
    ({"space": {"mitigations.lora": {"choice": [{"rank": 4}]}}}, "mitigations.lora.rank: unknown key"),
    ({"enqueue": [{"training.lr": 1.0}]}, "enqueue[0].training.lr: 1.0 is outside the range"),
    ({"enqueue": [{"training.epochs": 2}]}, "enqueue[0].training.epochs: not a key of the space"),
    ({"objective": {"kind": "constrained"}}, "objective.kind: constrained needs a budget"),
    ({"pruner": {"kind": "median"}}, "pruner.kind: Optuna's pruners watch one objective"),
])
def test_a_bad_tune_file_is_an_error_naming_the_file_and_key(study, change, message):
    path = study(**change)
    with pytest.raises(ConfigError) as error:
        load_tune(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_tune_file_loads_with_valid_trial_configs(path, monkeypatch):
    from retain.config import config_from_dict
    from retain.studies.tune.space import trial_config

    monkeypatch.chdir(REPO)  # tune files name their base config relative to the repository
    tune, space, base, enqueued = load_tune(path)
    for params in enqueued:
        config_from_dict(trial_config(base, space, params, REPO / "runs" / "x"))


def test_the_cli_exits_2_on_a_bad_tune_file(study):
    path = study(space={"training.lrr": {"float": [1e-4, 1e-3]}})
    proc = subprocess.run([sys.executable, "-m", "retain", "tune", path], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    assert f"retain: error: {path}: space.training.lrr" in proc.stderr


def test_choices_label_themselves_and_absent_switches_a_block_and_its_keys_off(study):
    _, space, base, enqueued = load_tune(study(
        space={"mitigations.interpolate": {"choice": ["absent", {"alpha": 0.5}]},
               "mitigations.interpolate.alpha": {"float": [0.1, 0.4]}, "training.scheduler": {"choice": ["cosine"]}},
        enqueue=[{"mitigations.interpolate": "absent", "training.scheduler": "cosine"},
                 {"mitigations.interpolate": {"alpha": 0.5}}]))
    assert enqueued == [{"mitigations.interpolate": "absent", "training.scheduler": "cosine"},
                        {"mitigations.interpolate": '{"alpha": 0.5}'}]  # a mapping is labelled by its JSON
    off = {"mitigations.interpolate": "absent", "mitigations.interpolate.alpha": 0.3, "training.scheduler": "cosine"}
    assert [p.key for p in space.active(off)] == ["mitigations.interpolate", "training.scheduler"]
    assert "interpolate" not in space.apply({"mitigations": {"interpolate": {"alpha": 0.9}}}, off)["mitigations"]
    on = {**off, "mitigations.interpolate": '{"alpha": 0.5}'}
    assert space.apply({}, on)["mitigations"]["interpolate"] == {"alpha": 0.3}  # the later, finer key wins
    # define-by-run: with the block off, its alpha is not sampled at all
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled.enqueue_trial({"mitigations.interpolate": "absent"})
    trial = sampled.ask()
    space.suggest(trial)
    assert set(trial.params) == {"mitigations.interpolate", "training.scheduler"}


# --- a study ---------------------------------------------------------------------------------------------------

def records(out) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (out / "trials").glob("*.json")}


def test_every_trial_is_a_run_config_a_user_can_train_alone(study, tmp_path, monkeypatch):
    import retain
    from safetensors.torch import load_file

    # seeds [0, 1]: the report re-runs the reference and the recommended recipe with seed 1 (seed 0 is the trial)
    path = study(enqueue=[{"training.lr": 3e-2, "mitigations.lora": "absent"}], seeds=[0, 1])
    compared = []  # what the report compares with the base: each shown run once, for its rows and its table
    for module in [m for m in sys.modules.values() if m and m.__name__.startswith(("retain.", "tools."))]:
        if getattr(module, "compare", None) is compare:
            monkeypatch.setattr(module, "compare", lambda base, after: compared.append(after) or compare(base, after))
    summary = run_tune(path, progress=False)
    out = tmp_path / "out"
    assert len(compared) == len(summary["rows"])
    done = records(out)
    assert len(done) == 3 and "reference" in done  # 2 trials and the reference run (the base config)
    first = trial_name({"training.lr": 3e-2, "mitigations.lora": "absent"})
    assert done[first]["overrides"] == {"training.lr": 3e-2, "mitigations.lora": "absent"}
    for name in done:
        config = load_config(out / "configs" / f"{name}.yaml")
        assert config.output.dir == str(out / "runs" / name)
        assert (out / "runs" / name / "final").is_dir() and (out / "dev" / f"{name}.json").is_file()
    assert load_config(out / "configs" / f"{first}.yaml").training.lr == 3e-2
    # the dev front is scored on test, and the recommended recipe is a run config
    assert summary["pareto_front"] and set(summary["pareto_front"]) <= set(done)
    assert {"reference", *summary["pareto_front"]} == set(summary["rows"])
    assert all((out / "test" / f"{n}.json").is_file() for n in summary["rows"])
    assert json.loads((out / "test" / "base.json").read_text())["split"] == "test"
    chosen = summary["tune"]["recommended"]
    for name in ("reference", chosen):  # each over both seeds: the trial itself, and a re-run with seed 1
        assert summary["rows"][name]["seeds"] == 2 and (out / "test" / f"{name}.seed1.json").is_file()
        again = load_config(out / "configs" / f"{name}.seed1.yaml")
        assert again.training.seed == 1 and again.output.dir == str(out / "runs" / f"{name}.seed1")
        assert again.training.lr == load_config(out / "configs" / f"{name}.yaml").training.lr
    # the recommended recipe against the reference is judged by the target's rule (retain.studies.sweep.target):
    # its points are each side's mean over seeds of what a trial measures, its margins the lines' distances
    against = summary["tune"]["against_reference"]
    assert against["seeds"] == [0, 1] and against["verdict"] in {"met", "not met", "not shown", "cannot be judged"}
    base = json.loads((out / "test" / "base.json").read_text())
    for side, run in (("reference", "reference"), ("recipe", chosen)):
        measured = [trial_module.measure(base, json.loads((out / "test" / f"{n}.json").read_text()), "sums")
                    for n in (run, f"{run}.seed1")]
        for k, what in enumerate(("gain", "forgetting")):
            assert against[what][side] == pytest.approx(sum(m[k] for m in measured) / 2, abs=1e-9)
    gain, loss = against["gain"], against["forgetting"]
    assert gain["margin"] == pytest.approx(gain["recipe"] - 0.95 * gain["reference"])
    assert loss["margin"] == pytest.approx(0.1 * loss["reference"] - loss["recipe"])  # the default tenth
    assert gain["margin_ci"][0] <= gain["margin"] <= gain["margin_ci"][1] and len(gain["per_seed_margin"]) == 2
    report = (out / "report.md").read_text()
    assert "means over training seeds 0, 1" in report
    assert f"at no more than 10% of its forgetting: **{against['verdict']}**" in report
    # each capability's change under the reference and the recipe, over both seeds, one row per capability each
    section = report.split("## Each capability, the reference and the recommended recipe (test split)")[1]
    rows = [line.split(" | ") for line in section.split("## Every trial")[0].splitlines() if line.startswith("| ")][1:]
    capabilities = {t["capability"] for t in base["tasks"].values()}
    assert sorted((r[0].lstrip("| "), r[1]) for r in rows) == sorted((n, c) for n in ("reference", chosen)
                                                                       for c in capabilities)
    assert all(len(r[4].split(", ")) == 2 for r in rows)  # each seed's change
    recommended = load_config(out / "recommended.yaml")
    assert recommended.output.dir == str(out / "recommended")
    for name in ("summary.md", "report.md", "pareto.png", "trials.png", "importance.json"):
        assert (out / name).is_file(), name
    # `retain train` on the trial's config alone gives the same weights
    alone = retain.train(out / "configs" / f"{first}.yaml", (f"output.dir={tmp_path / 'alone'}",), progress=False)
    tuned = load_file(out / "runs" / first / "final" / "model.safetensors")
    assert all((tuned[k] == v).all() for k, v in load_file(alone.final_dir / "model.safetensors").items())
    trained = []  # run again: every trial and every seed's re-run is finished, nothing is trained
    monkeypatch.setattr(trial_module, "train", lambda config, **kwargs: trained.append(config.output.dir))
    assert run_tune(path, progress=False)["tune"]["recommended"] == chosen and trained == []


def test_a_killed_study_resumes_without_running_finished_trials_again(study, tmp_path, monkeypatch):
    path = study(trials=3, enqueue=[{"training.lr": 3e-2, "mitigations.lora": "absent"},
                                    {"training.lr": 1e-3, "mitigations.lora": "absent"}])
    trained = []
    real_train = trial_module.train

    def train(config, **kwargs):
        trained.append(config.output.dir)
        if len(trained) == 3:  # the reference, the first trial, then Ctrl-C in the second
            raise KeyboardInterrupt
        return real_train(config, **kwargs)

    monkeypatch.setattr(trial_module, "train", train)
    with pytest.raises(KeyboardInterrupt):
        run_tune(path, progress=False)
    out = tmp_path / "out"
    first, second = (trial_name({"training.lr": lr, "mitigations.lora": "absent"}) for lr in (3e-2, 1e-3))
    assert set(records(out)) == {"reference", first}
    trained.clear()
    run_tune(path, progress=False)
    names = [dir.rsplit("/", 1)[-1] for dir in trained]
    assert names[0] == second and len(names) == 2  # the interrupted trial again, then one new one; nothing else
    assert first not in names and "reference" not in names
    states = [t.state.name for t in optuna.load_study(study_name="retain-tune",
                                                     storage=f"sqlite:///{out / 'study.db'}").trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1  # the interrupted attempt
    trained.clear()
    run_tune(path, progress=False)  # a finished study trains nothing
    assert trained == []


def test_the_pruner_stops_a_trial_clearly_worse_at_a_dev_check(study, tmp_path):
    import retain
    from safetensors.torch import load_file

    good, hopeless = ({"training.lr": lr, "mitigations.lora": "absent"} for lr in (3e-2, 1e-4))
    path = study(objective={"kind": "constrained", "max_forgetting_points": 100.0},
                 pruner={"kind": "median", "every": 4, "startup_trials": 1}, enqueue=[good, hopeless])
    run_tune(path, progress=False)
    done = records(tmp_path / "out")
    assert done[trial_name(good)]["state"] == "complete" and done[trial_name(good)]["gain"] > 50
    assert done[trial_name(good)]["intermediate"].keys() == {"4", "8"}
    assert done[trial_name(hopeless)]["state"] == "pruned", done[trial_name(hopeless)]
    pruned_at = int(done[trial_name(hopeless)]["reason"].removeprefix("pruned at step "))
    good_then = done[trial_name(good)]["intermediate"][str(pruned_at)]
    assert pruned_at < 12 and done[trial_name(hopeless)]["value"] < good_then
    metrics = [json.loads(line) for line in (tmp_path / "out" / "runs" / trial_name(hopeless) / "metrics.jsonl")
               .read_text().splitlines()]
    assert max(m["step"] for m in metrics) == pruned_at and any("tune/objective" in m for m in metrics)
    assert not (tmp_path / "out" / "dev" / f"{trial_name(hopeless)}.json").exists()  # no final dev scoring
    # the dev checks only read the model: the good trial alone, without them, ends with the same weights
    alone = retain.train(tmp_path / "out" / "configs" / f"{trial_name(good)}.yaml",
                         (f"output.dir={tmp_path / 'alone'}",), progress=False)
    tuned = load_file(tmp_path / "out" / "runs" / trial_name(good) / "final" / "model.safetensors")
    assert all((tuned[k] == v).all() for k, v in load_file(alone.final_dir / "model.safetensors").items())


def test_ray_runs_the_same_trials_with_the_same_results(study, tmp_path):
    ray = pytest.importorskip("ray")
    trials = [{"training.lr": 3e-2, "mitigations.lora": "absent"},
              {"training.lr": 1e-3, "mitigations.lora": {"r": 2, "alpha": 4}}]
    sequential = study("seq.yaml", output=str(tmp_path / "seq"), enqueue=trials)
    on_ray = study("ray.yaml", output=str(tmp_path / "ray"), enqueue=trials, resources={"cpu": 1, "gpu": 0})
    run_tune(sequential, progress=False)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        run_tune(on_ray, backend="ray", progress=False)
    finally:
        ray.shutdown()
    from ray.tune import Tuner

    assert Tuner.can_restore(str(tmp_path / "ray" / "ray" / "tune"))  # Ray Tune ran them (and could resume)
    seq, par = records(tmp_path / "seq"), records(tmp_path / "ray")
    names = [trial_name(params) for params in load_tune(sequential)[3]]  # from the choices' labels
    assert set(seq) == set(par) == {"reference", *names}
    for name in seq:
        assert par[name]["state"] == seq[name]["state"] == "complete", (par[name], seq[name])
        assert (par[name]["gain"], par[name]["forgetting"]) == (seq[name]["gain"], seq[name]["forgetting"]), name
        configs = [(tmp_path / d / "configs" / f"{name}.yaml").read_text().replace(str(tmp_path / d), "OUT")
                   for d in ("seq", "ray")]
        assert configs[0] == configs[1]


def test_a_collapsed_trial_is_pruned_not_a_crash(study, tmp_path, monkeypatch):
    """A learning rate that kills the model (retain.training.collapse) is a result of the search, as divergence is."""
    from retain.training.collapse import CollapseError

    path = study(trials=1, enqueue=[{"training.lr": 3e-2, "mitigations.lora": "absent"}])
    real_train = trial_module.train

    def train(config, **kwargs):
        if "reference" not in str(config.output.dir):
            raise CollapseError("training collapsed at step 2: from there the loss is ln(300) = 5.7038")
        return real_train(config, **kwargs)

    monkeypatch.setattr(trial_module, "train", train)
    run_tune(path, progress=False)
    record = records(tmp_path / "out")[trial_name({"training.lr": 3e-2, "mitigations.lora": "absent"})]
    assert record["state"] == "pruned" and record["reason"].startswith("collapsed: training collapsed at step 2")

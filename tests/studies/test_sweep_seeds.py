"""A sweep runs each strategy with several training seeds and summarises the recipe over them."""

import pytest
import yaml

from retain.config import load_config
from retain.core.schema import ConfigError
from retain.studies.sweep import load_sweep, result_files, run_sweep, strategy_configs
from conftest import write_doubling_task


def sweep_file(tmp_path, make_config, **fields):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(make_config(training={"max_steps": 2, "bf16": False})))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(base), "task": str(write_doubling_task(tmp_path)), "suite": "capital_recall",
                                     "output": str(tmp_path / "sweep"), "limit": 4, **fields}, sort_keys=False))
    return sweep


def test_each_strategy_runs_once_per_seed_and_its_row_holds_every_seed(make_config, tmp_path):
    sweep = sweep_file(tmp_path, make_config, seeds=[0, 1], strategies={"plain": {}})
    configs = strategy_configs(load_sweep(sweep), sweep)
    assert {name: c.training.seed for name, c in configs.items()} == {"plain.seed0": 0, "plain.seed1": 1}
    summary = run_sweep(sweep, progress=False)
    assert [p.name for p in result_files(load_sweep(sweep), "plain")] == ["plain.seed0.json", "plain.seed1.json"]
    assert all(p.is_file() for p in result_files(load_sweep(sweep), "plain"))
    assert load_config(tmp_path / "sweep" / "configs" / "plain.seed1.yaml").training.seed == 1
    row = summary["rows"]["plain"]
    assert row["seeds"] == 2 and len(row["gain_per_seed"]) == 2 and len(row["retained_per_seed"]) == 2
    assert row["gain"] == pytest.approx(sum(row["gain_per_seed"]) / 2)


def test_seeds_default_to_three_and_a_strategy_may_not_set_its_own(make_config, tmp_path):
    sweep = sweep_file(tmp_path, make_config, strategies={"plain": {}})
    assert load_sweep(sweep).seeds == [0, 1, 2]
    assert list(strategy_configs(load_sweep(sweep), sweep)) == ["plain.seed0", "plain.seed1", "plain.seed2"]
    sweep = sweep_file(tmp_path, make_config, strategies={"plain": {"training.seed": 3}})
    with pytest.raises(ConfigError, match=r"strategies.plain: training.seed is set by the study's `seeds`"):
        strategy_configs(load_sweep(sweep), sweep)


def test_the_wise_ft_line_is_scored_once_per_run_and_point(make_config, tmp_path):
    from retain.evaluation.results import load_results
    from retain.studies.sweep.line import line_path
    from retain.studies.sweep.summary import MATCHED_HEADER

    # soft prompts change none of the base's weights: that run has no line, and no matched-gain row
    soft = {"mitigations.prompt_tuning": {"num_virtual_tokens": 4}}
    sweep = sweep_file(tmp_path, make_config, seeds=[0], strategies={"unprotected": {}, "soft": soft}, line=[0.5],
                       suite="english")
    summary = run_sweep(sweep, progress=False)
    out = tmp_path / "sweep"
    path = line_path(out / "base.json", out, "unprotected", out / "results" / "unprotected.json", [0.5])
    assert [p.name for p in path] == ["base.json", "alpha-0.5.json", "unprotected.json"]
    assert all(p.is_file() for p in path) and list(summary["matched_gain"]) == ["unprotected"]  # read off that path
    assert (out / "results" / "soft.json").is_file() and not (out / "line" / "soft").exists()
    table = (out / "summary.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| strategy"))
    row = next(line for line in table if line.startswith("| unprotected"))
    assert MATCHED_HEADER in header and len(row.split("|")) == len(header.split("|"))
    base, half, end = ([item["loglikelihood"] for item in load_results(p)["tasks"]["english"]["items"]] for p in path)
    assert len(half) == len(base) == 4 and half != base and half != end  # a point between, scored like the run
    scored = path[1].stat().st_mtime_ns
    run_sweep(sweep, progress=False)  # run again: the point is there, so it is not scored twice
    assert path[1].stat().st_mtime_ns == scored
    for bad in ([1.0], [0.0], [0.5, 0.5]):
        with pytest.raises(ConfigError, match="line: expected distinct weights strictly between 0 and 1"):
            load_sweep(sweep_file(tmp_path, make_config, strategies={"plain": {}}, line=bad))

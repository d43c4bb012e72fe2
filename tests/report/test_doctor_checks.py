"""`retain doctor` on a run whose retention checks only measured (every task `ignore`d, as `retain demo` runs them):
that is no budget, so the advice to hold one stays, and its recipe makes the `ignore`s go."""

import json

import yaml

from retain.cli import main
from retain.config import load_config
from retain.report.doctor import holds_a_budget


def test_checks_that_only_measure_are_not_a_budget_and_the_recipe_makes_one(make_config, tmp_path, capsys):
    checks = {"suite": "english", "tasks": {"english": "ignore"}}
    config = make_config(mitigations={"retention": checks})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["doctor", str(path), "--json", "--probe", "0"]) == 0
    diagnosis = json.loads(capsys.readouterr().out)
    assert "no_retention" in {f["cause"] for f in diagnosis["findings"]}
    general = tmp_path / "general.jsonl"
    general.write_text(json.dumps({"text": "the capital of france is paris ."}) + "\n")
    fixed = load_config(path, [item.replace("=GENERAL.jsonl", f"={general}") for item in diagnosis["recipe"]])
    assert not holds_a_budget(load_config(path).mitigations) and holds_a_budget(fixed.mitigations)
    assert fixed.mitigations["retention"].action == "early_stop" and fixed.mitigations["retention"].tasks == {}
    # one task held is a budget: no advice to add one
    held = make_config(mitigations={"retention": {**checks, "tasks": {"english": {"weight": 1.0}}}})
    path.write_text(yaml.safe_dump(held))
    assert main(["doctor", str(path), "--json", "--probe", "0"]) == 0
    assert "no_retention" not in {f["cause"] for f in json.loads(capsys.readouterr().out)["findings"]}

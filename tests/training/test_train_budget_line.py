"""`retain train` with a retention budget ends by saying how the budget ended: held, or what broke it and what it
did (one line after the `trained ...` line, from the run's retention.json)."""

import yaml

from retain.cli import main


def train(capsys, config: dict, tmp_path) -> list[str]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_the_budget_outcome_is_the_last_line(make_config, tmp_path, capsys):
    # lr 0.3 wrecks the model at once: English perplexity breaches a 0% budget at the first check (step 2)
    broken = make_config(training={"lr": 0.3, "max_steps": 4}, mitigations={"retention": {
        "suite": "english", "limit": 4, "every": 2, "max_perplexity_increase": 0.0, "action": "rollback"}})
    *_, trained, line = train(capsys, broken, tmp_path)
    assert trained.startswith("trained 2 steps;")
    assert line.startswith(f"Retention budget of {tmp_path / 'run'}: ") and "on the dev split of english" in line
    assert "english word_perplexity rose +" in line and "action rollback" in line and line.endswith("the start.")
    # a budget no step can breach held at every check
    held = make_config(training={"lr": 1e-5, "max_steps": 4}, mitigations={"retention": {
        "suite": "english", "limit": 4, "every": 2, "max_perplexity_increase": 1000.0}})
    held["output"]["dir"] = str(tmp_path / "held")
    *_, trained, line = train(capsys, held, tmp_path)
    assert trained.startswith("trained 4 steps;") and line.endswith("checked every 2 steps; held at all 2 checks.")
    # without a budget: nothing more than the trained line
    assert train(capsys, make_config(training={"max_steps": 2}, output={"dir": str(tmp_path / "plain")}),
                 tmp_path)[-1].startswith("trained 2 steps;")

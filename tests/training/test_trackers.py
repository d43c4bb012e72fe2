"""training.report_to: every logged row reaches the trackers (accelerate's), tested offline."""

import json

import pytest

import retain
from retain.config import config_from_dict
from retain.core.schema import ConfigError


def test_mlflow_gets_every_loss_term_and_the_config(make_config, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store, as a user without a server keeps one
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    config = config_from_dict(make_config(training={"report_to": ["mlflow"], "project": "forgetting"},
                                          mitigations={"l2sp": {"weight": 0.1}}))
    result = retain.train(config, progress=False)

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("forgetting")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["training.lr"] == "0.01" and run.data.params["mitigations.l2sp.weight"] == "0.1"
    logged = {key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
              for key in ("loss", "loss/task", "loss/l2sp", "grad_norm")}
    expected = {key: [row[key] for row in result.metrics if key in row] for key in logged}
    assert len(logged["loss"]) == 6
    for key in logged:
        assert logged[key] == pytest.approx(expected[key]), key


def test_wandb_offline_run_records_every_row(make_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = config_from_dict(make_config(training={"report_to": ["wandb"], "project": "forgetting"}))
    result = retain.train(config, progress=False)
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # The offline log is W&B's protobuf record stream: each history item holds its key and its value as JSON
    # text, so every row's loss (and the config's lr) must appear in it verbatim.
    raw = log.read_bytes()
    assert b"loss/task" in raw and b"training.lr" in raw
    for row in result.metrics:
        assert json.dumps(row["loss"]).encode() in raw, row


def test_tensorboard_is_the_default_and_none_writes_no_events(make_config, tmp_path):
    default = retain.train(config_from_dict(make_config()), progress=False)
    assert list((default.output_dir / "tensorboard").rglob("events.out.tfevents.*"))
    quiet = retain.train(config_from_dict(make_config(training={"report_to": []},
                                                      output={"dir": str(tmp_path / "quiet")})), progress=False)
    assert not (quiet.output_dir / "tensorboard").exists() and quiet.metrics_path.is_file()


@pytest.mark.parametrize("report_to, message", [
    (["neptune"], "unknown tracker 'neptune'"), (["tensorboard", "tensorboard"], "named twice")])
def test_a_bad_tracker_is_a_config_error(make_config, report_to, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(make_config(training={"report_to": report_to}))

"""metrics.jsonl (one row per logged step, appended whole), the experiment trackers, and the window of steps
a log row averages over."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from retain.core.files import atomic_write_text
from retain.core.schema import to_dict


class MetricsLog:
    """metrics.jsonl on the main process, and every row to the run's trackers (accelerate's: TensorBoard,
    MLflow, W&B), started here — after the output dir is claimed — with the run's config as parameters."""

    def __init__(self, output_dir: Path, accelerator, config: dict):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = accelerator.is_main_process
        self.accelerator = accelerator
        self.rows: list[dict] = []
        if self.enabled and self.path.exists():
            self.rows = read_rows(self.path)
        accelerator.init_trackers(output_dir.name, config=config)

    def truncate_after(self, step: int) -> None:
        """On resume: forget rows from steps the checkpoint had not reached."""
        self.rows = [r for r in self.rows if r["step"] <= step]
        self._flush()

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        self.accelerator.log(scalars, step=row["step"])
        self._append((json.dumps(row) + "\n").encode())

    def _append(self, line: bytes) -> None:
        """One row onto the end of the file (rewriting the whole file at each log step cost O(rows) and an fsync).

        The whole line goes in one write(2) to an O_APPEND file (a row is a few hundred bytes), so a killed
        process leaves whole lines; a write that fails part-way (disk full) is cut back off before the error
        propagates. Should a last line still end without its newline (a power cut, a kill inside a write that
        crosses a page), read_rows drops it, and a resume rewrites the file atomically without it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                while line:
                    line = line[os.write(fd, line):]
            except OSError as e:
                os.ftruncate(fd, size)
                raise OSError(e.errno, e.strerror, str(self.path)) from None  # os.write's error names no file
        finally:
            os.close(fd)

    def _flush(self) -> None:
        """The whole file, atomically: on resume, where rows past the checkpoint (and a torn line) go."""
        if self.enabled:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def close(self) -> None:
        if self.enabled and self.path.exists():  # the rows on disk when the run returns, as each rewrite was
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.accelerator.end_training()


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl; a last line without its newline (an append cut short) is dropped."""
    complete = path.read_text().split("\n")[:-1]  # what follows the last newline is empty or torn
    return [json.loads(line) for line in complete if line.strip()]


def make_trackers(training, output_dir: Path) -> list:
    """accelerate trackers for `training.report_to`, each named for the run (its output dir's name):
    TensorBoard events in <output>/tensorboard, an MLflow run in experiment `training.project` (where
    MLFLOW_TRACKING_URI points; mlflow's default is ./mlruns), a W&B run in project `training.project`."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    run_name = output_dir.resolve().name
    made = {"tensorboard": lambda: TensorBoardTracker("tensorboard", output_dir),
            "mlflow": lambda: MLflowTracker(experiment_name=training.project, run_name=run_name),
            "wandb": lambda: WandBTracker(training.project, name=run_name)}
    return [made[name]() for name in training.report_to]


def tracker_config(config) -> dict:
    """The run config as flat `section.key` parameters of scalar types (what every tracker accepts)."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", to_dict(config))
    return flat


class LogWindow:
    """The steps since the last log step, summed on the device until a log step reads them.

    A log row holds the means over the window's steps (loss and each term, gradient norm), not the last
    step's values; tokens/s counts every token of the window on every process.
    """

    def __init__(self, device, first_step: int):
        self.first_step = first_step
        self.names: list[str] = []
        self.sums = torch.zeros(0, device=device)  # (n_terms + 1,): each term, then the gradient norm
        self.tokens = torch.zeros((), device=device)
        self.start = time.perf_counter()

    def add(self, names: list[str], terms: torch.Tensor, grad_norm: torch.Tensor, micro_batches: list[dict]) -> None:
        values = torch.cat([terms.detach().float(), grad_norm.detach().float().reshape(1).to(terms.device)])
        self.names = names
        self.sums = values if self.sums.numel() == 0 else self.sums + values
        self.tokens += sum(b["attention_mask"].sum() for b in micro_batches).to(self.tokens.device)

    def row(self, step: int, accelerator, lr: float) -> dict:
        n_steps = max(step - self.first_step, 1)
        means = (self.sums / n_steps).tolist()
        values = dict(zip(self.names, means[:-1]))
        elapsed = time.perf_counter() - self.start
        tokens = accelerator.reduce(self.tokens, "sum").item()
        return {"step": step, "loss": sum(values.values()), **{f"loss/{k}": v for k, v in values.items()},
                "lr": lr, "grad_norm": means[-1], "tokens_per_s": tokens / max(elapsed, 1e-9),
                "step_time_s": elapsed / n_steps}

    def restart_clock_if_empty(self, step: int) -> None:
        if self.first_step == step:
            self.start = time.perf_counter()

"""metrics.jsonl (one row per logged step, rewritten atomically), TensorBoard events, and the window of
steps a log row averages over."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from retain.io import atomic_write_text


class MetricsLog:
    def __init__(self, output_dir: Path, enabled: bool):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.rows: list[dict] = []
        self._writer = None
        if enabled and self.path.exists():
            self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume: forget rows from steps the checkpoint had not reached."""
        self.rows = [r for r in self.rows if r["step"] <= step]
        self._flush()

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, row["step"])
        self._flush()

    def _flush(self) -> None:
        # Small file, so rewriting keeps it whole after any crash: no torn last line.
        if self.enabled:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


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

"""metrics.jsonl (one row per logged step, rewritten atomically) and TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path

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

"""Reward hacking made visible: a run whose reward rose while a capability fell significantly.

A GRPO run logs its reward (grpo/reward) and its KL to the base (grpo/kl) in metrics.jsonl; a DPO run its
implicit reward margin (dpo/reward_margin). The reward going up says the objective was met; the report's
comparison says what it cost. When the reward rose and a capability got significantly worse (verdict worse,
graded moderate or beyond), the report says so, with the reward and KL at the start and end of training:
the warning, in practitioners' accounts of forgetting in preference and RL tuning, that a reward which pays for the template alone lets the model drop what it knew.
"""

from __future__ import annotations

from pathlib import Path

from retain.core.files import read_metrics
from retain.report.severity import rank

REWARDS = ("grpo/reward", "dpo/reward_margin")  # the first a run logged is its reward
KL = ("grpo/kl", "dpo/logratio_chosen")


def curve(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if isinstance(r.get(key), (int, float))]


def ends(values: list[float]) -> tuple[float, float]:
    """(start, end): the means of the first and last fifth of the logged values (one row each at least)."""
    k = max(1, len(values) // 5)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def reward_trend(run_dir: Path) -> dict | None:
    """{reward, start, end, kl_start, kl_end} from a run's metrics.jsonl, or None if it logged no reward."""
    rows = read_metrics(run_dir)
    key = next((k for k in REWARDS if curve(rows, k)), None)
    if key is None or len(curve(rows, key)) < 2:
        return None
    start, end = ends(curve(rows, key))
    trend = {"reward": key, "start": start, "end": end}
    kl_key = KL[REWARDS.index(key)]
    if len(curve(rows, kl_key)) >= 2:
        trend["kl"], (trend["kl_start"], trend["kl_end"]) = kl_key, ends(curve(rows, kl_key))
    return trend


def hacking_lines(run_dirs: list[Path], comparisons: dict) -> list[str]:
    """One warning per run whose reward rose while a capability fell significantly.

    Runs pair with the comparisons in order (the report's fine-tunes); with one comparison, every run is its.
    """
    if len(run_dirs) == len(comparisons):
        pairs = list(zip(run_dirs, comparisons.items()))
    elif len(comparisons) == 1:
        pairs = [(d, next(iter(comparisons.items()))) for d in run_dirs]
    else:
        return []
    lines = []
    for run, (label, comparison) in pairs:
        trend = reward_trend(Path(run))
        if trend is None or trend["end"] <= trend["start"]:
            continue
        fell = [c for c, r in comparison["capabilities"].items()
                if r["verdict"] == "worse" and rank(r["severity"]) >= rank("moderate")]
        if not fell:
            continue
        kl = (f"; {trend['kl']} {trend['kl_start']:.3g} → {trend['kl_end']:.3g}" if "kl" in trend else "")
        lines.append(f"Possible reward hacking in {label} (run {Path(run).name}): {trend['reward']} rose {trend['start']:.3g} → "
                     f"{trend['end']:.3g}{kl} while {', '.join(fell)} fell significantly — the reward pays for "
                     "something other than what the model knew (add a knowledge term, or strengthen the KL leash).")
    return lines

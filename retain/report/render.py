"""report.md and a self-contained report.html from the report dict, and the number formats all views share.

Units: a score's change is in points (percentage points, "pts"); a perplexity's change is relative,
"+12%" while small and a ratio "×1,658" (after / before) once it more than doubles. A CI is printed
with enough decimals that its two bounds differ (about two significant digits of its width).
"""

from __future__ import annotations

import base64
import html
import math

from retain.report.answers import answers_html, answers_markdown
from retain.report.groups import groups_html, groups_markdown
from retain.report.retention import measured_only, retention_html, retention_markdown
from retain.report.runs import next_steps_html, next_steps_markdown
from retain.report.severity import LEGEND as SEVERITY_LEGEND


def ci_decimals(low: float, high: float, least: int, most: int = 3) -> int:
    """Decimals for numbers shown with a CI of these bounds (in display units): two significant digits
    of the width, so that the bounds print differently ('-0.83% to -0.61%', not '-1% to -1%')."""
    width = abs(high - low)
    if not math.isfinite(width) or width == 0:
        return least
    return min(most, max(least, math.ceil(1 - math.log10(width))))


def format_relative(x: float) -> str:
    """A relative change on its own: '+4.3%', '-12%', or '×1,658' once it more than doubles."""
    if x >= 1:
        ratio = 1 + x
        return f"×{ratio:,.1f}" if ratio < 10 else f"×{ratio:,.0f}"
    return f"{100 * x:+.1f}%" if abs(x) < 0.1 else f"{100 * x:+,.0f}%"


def format_change(row: dict) -> tuple[str, str, str]:
    """(change, CI low, CI high) of a compare row, all three in one unit: points for scores ('-60.0'),
    a relative change for perplexities ('+12.3%', or the ratio '×1,658' once the estimate more than
    doubles), with decimals chosen from the CI's width."""
    delta, low, high = row["delta"], row["ci_low"], row["ci_high"]
    if not row["relative"]:
        d = ci_decimals(100 * low, 100 * high, least=1)
        return tuple(f"{100 * x:+.{d}f}" for x in (delta, low, high))
    if delta >= 1:
        d = ci_decimals(1 + low, 1 + high, least=0)
        return tuple(f"×{1 + x:,.{d}f}" for x in (delta, low, high))
    d = ci_decimals(100 * low, 100 * high, least=0)
    return tuple(f"{100 * x:+,.{d}f}%" for x in (delta, low, high))


def metric_words(metric: str) -> str:
    """How a headline names a metric: word perplexity is 'perplexity', the others keep their names."""
    return {"word_perplexity": "perplexity"}.get(metric, metric.replace("_", " "))


def _fmt_value(row: dict, key: str) -> str:
    value = row[key]
    return f"{value:,.2f}" if row["relative"] else f"{100 * value:.1f}"


def _fmt_delta(row: dict) -> str:
    change, low, high = format_change(row)
    return f"{change}{'' if row['relative'] else ' pts'} [{low}, {high}]" + _fmt_seeds(row)


def _fmt_seeds(row: dict) -> str:
    """'; seeds +1.2, -0.3, +0.8' for a recipe trained with several seeds ('' for one)."""
    seeds = row.get("per_seed") or ()
    if len(seeds) < 2:
        return ""
    return "; seeds " + ", ".join(f"{100 * x:+.1f}{'%' if row['relative'] else ''}" for x in seeds)


def _fmt_p(row: dict) -> str:
    p = row.get("p_value")
    return "" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


HEADER = ["metric", "before", "after", "change [95% CI]", "McNemar p", "n", "verdict", "severity"]


def _table_row(name: str, r: dict, metric: str, note: str = "") -> list[str]:
    metric += "" if r["relative"] else " (%)"
    chance = r.get("chance")
    if chance is not None and not r["relative"]:
        metric += f", chance {100 * chance:.1f}"
    metric += note
    return [name, metric, _fmt_value(r, "before"), _fmt_value(r, "after"), _fmt_delta(r), _fmt_p(r), str(r["n"]),
            r["verdict"], r.get("severity", "")]


def _table_rows(rows: dict, first_col: str) -> tuple[list[str], list[list[str]]]:
    """One row per task or capability; below a task, each other metric of it that changed significantly and
    tells a different story (another verdict or severity than the primary metric's)."""
    body = []
    for name, r in rows.items():
        body.append(_table_row(name, r, r["metric"]))
        for metric, other in r.get("other_metrics", {}).items():
            if other["verdict"] != "no significant change" and \
                    (other["verdict"], other["severity"]) != (r["verdict"], r["severity"]):
                body.append(_table_row(name, {**other, "chance": None}, metric, ", secondary"))
    return [first_col] + HEADER, body


def forgetting_line(label: str, comparison: dict) -> str:
    f = comparison.get("forgetting")
    if not f:
        return ""
    return f"Forgetting of {label}: {f['severity']}" + (f" (worst: {f['worst']})." if f.get("worst") else ".")


LEGEND = ("Changes are fine-tune minus base on the same items: points (pts) for scores; for perplexities the "
          "relative change, +12% or a ratio ×1,658 (after / before) once it more than doubles; lower perplexity is "
          "better, so a rise is 'worse'. Verdict: better or worse when the 95% CI excludes 0. CIs are paired "
          "bootstrap percentiles (2,000 resamples) over items, drawing together the items of a task that share a cluster "
          "(the entity they are about); for a label with several results files (one recipe, one file per training "
          "seed) the change is the seeds' mean, the CI resamples seeds and then items within each, each seed's change "
          "follows, and a change is better or worse only if every seed moved the same way. p is the exact McNemar "
          "test on the items whose outcome changed (one seed). "
          "A secondary row is another metric of the task that changed significantly, and differently. "
          + SEVERITY_LEGEND)


def _budget_text(b: dict) -> str:
    if "max_drop_points" in b:
        return (f"no score may drop more than {b['max_drop_points']:g} points and no perplexity may rise more than "
                f"{100 * b['max_perplexity_increase']:g}%")
    # retention.json written before the budget had units: one number for both
    return (f"no task may drop more than {b['max_drop']:g} (x100 points for scores, a relative rise for "
            f"perplexities)")


def budget_lines(report: dict) -> list[str]:
    """One sentence per run that had a retention budget: the budget, in its units, what happened and when."""
    lines = []
    for run, b in report.get("retention_budgets", {}).items():
        outcome = b["outcome"]
        checks = b["checks"]
        if measured_only(b):
            lines.append(f"Retention checks of {run}: every task of {b['suite']} measured on its dev split every "
                         f"{b['every']} steps ({len(checks)} checks), none held to a budget.")
            continue
        if outcome and "chosen" in outcome:  # a budget that chose among kept points (retain.report.retention)
            lines.append(f"Retention budget of {run}: {_budget_text(b)} on the dev split of {b['suite']}, checked "
                         f"every {b['every']} steps; {outcome['why']}: action {outcome['action']} ended at "
                         f"{outcome['chosen']['point']}.")
            continue
        what = (f"breached at step {outcome['step']}: action {outcome['action']}"
                + (f" (restored step {outcome['restored_step']})" if "restored_step" in outcome else "")
                + (f" (alpha {outcome['alpha']:.3f})" if "alpha" in outcome else "")
                + (f"; {outcome['reason']}" if outcome.get("reason") else "")) if outcome else \
            f"held at all {len(checks)} checks"
        lines.append(f"Retention budget of {run}: {_budget_text(b)} on the dev split of {b['suite']}, checked every "
                     f"{b['every']} steps; {what}.")
    return lines


def compared_line(report: dict) -> str:
    """'Base model: retain-tiny; fine-tunes: unprotected (runs/demo/unprotected/final), protected (...); scored on
    the test split.' (a results file's label, then the model it scored when that says more)."""
    models = report.get("models", {})

    def named(label: str) -> str:
        model = models.get(label)
        return label if not model or model == label else f"{label} ({model})"

    base = models.get(report["base"]) or report["base"]
    tuned = ", ".join(named(k) for k in models if k != report["base"])
    return (f"Base model: {base}" + (f"; fine-tunes: {tuned}" if tuned else "")
            + f"; scored on the {report['split']} split.")


def render_markdown(report: dict) -> str:
    lines = ["# Forgetting report", "", compared_line(report), ""]
    lines += [f"**{v}**  " for v in report.get("verdicts", {}).values()] + [""]
    lines += [f"- {h}" for h in report["headlines"]] + [""]
    lines += [f"> {line}" for line in budget_lines(report)] + ([""] if budget_lines(report) else [])
    lines += [f"> **{line}**" for line in report.get("reward_hacking", [])] + ([""] if report.get("reward_hacking") else [])
    lines += next_steps_markdown(report)
    for label, comparison in report["comparisons"].items():
        lines += [f"**{forgetting_line(label, comparison)}**", ""] if comparison.get("forgetting") else []
        for title, key, col in (("capability", "capabilities", "capability"), ("task", "tasks", "task")):
            header, body = _table_rows(comparison[key], col)
            lines += [f"## {label}: per {title}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body] + [""]
    lines += groups_markdown(report) + answers_markdown(report) + retention_markdown(report)
    lines += [LEGEND, ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.better{color:#1a7f37;font-weight:600}
.worse{color:#c62828;font-weight:600}.moderate{color:#b26a00;font-weight:600}.severe{color:#fff;
background:#e53935;font-weight:600}.catastrophic{color:#fff;background:#3b0000;font-weight:700;
text-transform:uppercase}.headline{font-size:18px;background:#f7f7fb;border-left:4px solid #4c72b0;
padding:.6em 1em;margin:.4em 0}img{max-width:100%}small{color:#666}"""


# the verdict lines on top: one box per run, its border in the colour of its grade
CSS_VERDICTS = """.verdict{font-size:19px;font-weight:600;padding:.5em 1em;margin:.3em 0;border-left:8px solid #1a7f37;
background:#f4fbf6}.verdict.moderate{border-color:#b26a00;background:#fff8ec}.verdict.severe{border-color:#e53935;
background:#fdeeee;color:#222;text-transform:none}.verdict.catastrophic{border-color:#3b0000;background:#f6e6e6;
color:#3b0000;text-transform:none}pre{background:#f6f8fa;padding:.6em;white-space:pre-wrap}.next{border:1px solid #ddd;
padding:0 1em;margin:1em 0}table.answers td,table.answers th{text-align:left}table.answers td{font-family:monospace;
font-size:13px}"""


def render_html(report: dict, figures: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>retain: forgetting report</title>"
             f"<style>{CSS}{CSS_VERDICTS}</style></head><body><h1>Forgetting report</h1>",
             f"<p>{esc(compared_line(report))}</p>"]
    parts += [f"<div class='verdict {esc(report['comparisons'][label]['forgetting']['severity'])}'>{esc(v)}</div>"
              for label, v in report.get("verdicts", {}).items()]
    parts += [f"<div class='headline'>{esc(h)}</div>" for h in report["headlines"]]
    parts += [f"<p><b>{esc(line)}</b></p>" for line in budget_lines(report)]
    parts += [f"<p class='severe'>{esc(line)}</p>" for line in report.get("reward_hacking", [])]
    for name, png in figures.items():
        parts.append(f"<img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts += next_steps_html(report)
    for label, comparison in report["comparisons"].items():
        if comparison.get("forgetting"):
            grade = comparison["forgetting"]["severity"]
            parts.append(f"<p class='{esc(grade)}'>{esc(forgetting_line(label, comparison))}</p>")
        for title, key, col in (("capability", "capabilities", "capability"), ("task", "tasks", "task")):
            header, body = _table_rows(comparison[key], col)
            parts.append(f"<h2>{esc(label)}: per {title}</h2><table><tr>"
                         + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            for row in body:  # the last two cells: verdict and severity, coloured by value
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row[:-2])
                             + "".join(f"<td class='{esc(c)}'>{esc(c)}</td>" for c in row[-2:]) + "</tr>")
            parts.append("</table>")
    parts += groups_html(report) + answers_html(report) + retention_html(report)
    parts.append(f"<p><small>{esc(LEGEND)} Generated by retain.</small></p></body></html>")
    return "\n".join(parts)

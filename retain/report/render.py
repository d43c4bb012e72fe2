"""report.md and a self-contained report.html from the report dict."""

from __future__ import annotations

import base64
import html


def format_relative(x: float) -> str:
    """A relative change: '+12%' while small, 'x463.1' once it more than doubles (+46212% reads badly)."""
    return f"x{1 + x:.1f}" if x >= 1 else f"{x:+.0%}"


def _fmt_value(row: dict, key: str) -> str:
    value = row[key]
    return f"{value:.2f}" if row["relative"] else f"{100 * value:.1f}"


def _fmt_delta(row: dict) -> str:
    if row["relative"]:
        return f"{row['delta']:+.1%} [{row['ci_low']:+.1%}, {row['ci_high']:+.1%}]"
    return f"{100 * row['delta']:+.1f} [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"


def _fmt_p(row: dict) -> str:
    p = row.get("p_value")
    return "" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def _table_rows(rows: dict, first_col: str) -> tuple[list[str], list[list[str]]]:
    header = [first_col, "metric", "before", "after", "change [95% CI]", "McNemar p", "n", "verdict"]
    body = []
    for name, r in rows.items():
        metric = r["metric"] + ("" if r["relative"] else " (%)")
        chance = r.get("chance")
        if chance is not None and not r["relative"]:
            metric += f", chance {100 * chance:.1f}"
        body.append([name, metric, _fmt_value(r, "before"), _fmt_value(r, "after"), _fmt_delta(r), _fmt_p(r),
                     str(r["n"]), r["verdict"]])
    return header, body


def budget_lines(report: dict) -> list[str]:
    """One sentence per run that had a retention budget: the budget, what happened and when."""
    lines = []
    for run, b in report.get("retention_budgets", {}).items():
        outcome = b["outcome"]
        checks = b["checks"]
        what = (f"breached at step {outcome['step']}: action {outcome['action']}"
                + (f" (restored step {outcome['restored_step']})" if "restored_step" in outcome else "")
                + (f" (alpha {outcome['alpha']:.3f})" if "alpha" in outcome else "")) if outcome else \
            f"held at all {len(checks)} checks"
        lines.append(f"Retention budget of {run}: no task may drop more than {b['max_drop']} on the dev split of "
                     f"{b['suite']}, checked every {b['every']} steps; {what}.")
    return lines


def render_markdown(report: dict) -> str:
    lines = ["# Forgetting report", "", f"Base: **{report['base']}**; split: {report['split']}.", ""]
    lines += [f"- {h}" for h in report["headlines"]] + [""]
    lines += [f"> {line}" for line in budget_lines(report)] + ([""] if budget_lines(report) else [])
    for label, comparison in report["comparisons"].items():
        for title, key, col in (("capability", "capabilities", "capability"), ("task", "tasks", "task")):
            header, body = _table_rows(comparison[key], col)
            lines += [f"## {label}: per {title}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body] + [""]
    lines += ["Changes are fine-tune minus base on the same items (points for accuracies, relative change for "
              "perplexities); CIs are paired bootstrap percentiles (2,000 resamples); p is the exact McNemar test.", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.rose{color:#1a7f37;font-weight:600}
.fell{color:#c62828;font-weight:600}.headline{font-size:18px;background:#f7f7fb;border-left:4px solid #4c72b0;
padding:.6em 1em;margin:.4em 0}img{max-width:100%}small{color:#666}"""


def render_html(report: dict, figures: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>retain: forgetting report</title>"
             f"<style>{CSS}</style></head><body><h1>Forgetting report</h1>",
             f"<p>Base <b>{esc(report['base'])}</b>, split <b>{esc(str(report['split']))}</b>.</p>"]
    parts += [f"<div class='headline'>{esc(h)}</div>" for h in report["headlines"]]
    parts += [f"<p><b>{esc(line)}</b></p>" for line in budget_lines(report)]
    for name, png in figures.items():
        parts.append(f"<img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    for label, comparison in report["comparisons"].items():
        for title, key, col in (("capability", "capabilities", "capability"), ("task", "tasks", "task")):
            header, body = _table_rows(comparison[key], col)
            parts.append(f"<h2>{esc(label)}: per {title}</h2><table><tr>"
                         + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            for row in body:
                css = {"rose": "rose", "fell": "fell"}.get(row[-1], "")
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row[:-1])
                             + f"<td class='{css}'>{esc(row[-1])}</td></tr>")
            parts.append("</table>")
    parts.append("<p><small>Changes are fine-tune minus base on the same items (points for accuracies, relative "
                 "change for perplexities). CIs: paired bootstrap, 2,000 resamples, percentile 95%. p: exact "
                 "McNemar test on the items whose outcome changed. Generated by retain.</small></p></body></html>")
    return "\n".join(parts)

"""How bad a loss is, graded as the seeds grade forgetting (mild, moderate, severe, catastrophic).

Scores (accuracy, exact match, contains, ...), by the points lost (the seeds' benchmark drops):
    mild          less than 5 points
    moderate      5 to 15 points
    severe        more than 15 points
    catastrophic  the score ends at or below chance (the task's `chance` in its results)
Perplexities, by the relative rise after / before - 1 (the seeds grade scores only; this mapping is retain's):
    mild          less than +10%
    moderate      +10% to +50%
    severe        more than +50%
    catastrophic  ×10 or more (as unsure as choosing among ten times as many words: text prediction has
                  collapsed), or at or above the task's `chance` perplexity where its results record one
Only a significant loss (verdict "worse": the 95% CI excludes 0) is graded; a gain or a change the
CI cannot tell from 0 is "none". A run's grade is the worst grade of any of its rows.
"""

from __future__ import annotations

SEVERITIES = ("none", "mild", "moderate", "severe", "catastrophic")  # in increasing order
POINTS_MODERATE, POINTS_SEVERE = 5.0, 15.0  # points lost
PERPLEXITY_MODERATE, PERPLEXITY_SEVERE, PERPLEXITY_CATASTROPHIC = 0.10, 0.50, 9.0  # after / before - 1

LEGEND = ("Severity of a significant loss, as the seeds grade forgetting: mild < 5 points, moderate 5-15, "
          "severe > 15, catastrophic = the score ends at or below chance. For perplexity (relative rise): "
          "mild < +10%, moderate +10% to +50%, severe > +50%, catastrophic ×10 or more. "
          "A gain or a change whose 95% CI includes 0 is graded none.")


def severity(row: dict) -> str:
    """The grade of one row of `compare` (keys: verdict, relative, delta, after, lower_is_better, chance)."""
    if row["verdict"] != "worse":
        return "none"
    chance = row.get("chance")
    if row["relative"]:
        rise = round(row["delta"], 9)  # 0.1 is not 0.1000000000000001
        if rise >= PERPLEXITY_CATASTROPHIC or (chance is not None and row["after"] >= chance):
            return "catastrophic"
        return "severe" if rise > PERPLEXITY_SEVERE else "moderate" if rise >= PERPLEXITY_MODERATE else "mild"
    lower_is_better = row["lower_is_better"]
    if chance is not None and (row["after"] >= chance if lower_is_better else row["after"] <= chance + 1e-9):
        return "catastrophic"
    points = round(100 * abs(row["delta"]), 9)  # 0.85 - 0.7 is 15.000000000000002 points
    return "severe" if points > POINTS_SEVERE else "moderate" if points >= POINTS_MODERATE else "mild"


def rank(grade: str) -> int:
    return SEVERITIES.index(grade)


def worst(grades) -> str:
    """The worst of `grades` ("none" if there are none)."""
    return max(grades, key=rank, default="none")

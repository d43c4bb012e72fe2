"""How bad a loss is: mild, moderate, severe, catastrophic.

The grades follow a practitioners' account of forgetting after fine-tuning (a question-and-answer text on why
a model's abilities drop after SFT): a moderate loss drops knowledge benchmarks by 5 to 15 points, a severe one
by more than 15, and a catastrophic one leaves the model with almost none of what pretraining gave it. retain
reads "almost none" relative to the base and to guessing: what is left of the capability's margin above chance.

Scores (accuracy, exact match, contains, ...), by the points lost:
    mild          less than 5 points
    moderate      5 to 15 points
    severe        more than 15 points
    catastrophic  the capability keeps less than a tenth of its margin above chance
                  ((after - chance) < 0.1 · (before - chance)), or ends at or below chance; needs the task's
                  `chance` (in its results). 100 → 2.5 exact match, chance 0: catastrophic (2.5% of the margin
                  kept); 100 → 12: severe (12% kept).
Perplexities, by the relative rise after / before - 1 (the text grades scores only; this mapping is retain's):
    mild          less than +10%
    moderate      +10% to +50%
    severe        more than +50%
    catastrophic  ×10 or more (as unsure as choosing among ten times as many words: text prediction has
                  collapsed); or, where the results record a `chance` perplexity, at or above it or keeping less
                  than a tenth of the margin below it (in log perplexity, i.e. bits per word)
Only a significant loss (verdict "worse": the 95% CI excludes 0, and with several seeds every seed lost) is
graded; a gain or a change that is not shown is "none". A run's grade is the worst grade of any of its rows.
"""

from __future__ import annotations

from retain.evaluation.compare import margin_kept

SEVERITIES = ("none", "mild", "moderate", "severe", "catastrophic")  # in increasing order
POINTS_MODERATE, POINTS_SEVERE = 5.0, 15.0  # points lost
MARGIN_KEPT_CATASTROPHIC = 0.1  # catastrophic below this share of the base's margin over chance
PERPLEXITY_MODERATE, PERPLEXITY_SEVERE, PERPLEXITY_CATASTROPHIC = 0.10, 0.50, 9.0  # after / before - 1

LEGEND = ("Severity of a significant loss, after a practitioners' grading of forgetting after fine-tuning (moderate: "
          "knowledge scores drop 5-15 points; severe: more than 15; catastrophic: the model keeps almost none of "
          "what pretraining gave it): mild < 5 points, moderate 5-15, severe > 15, catastrophic = the capability "
          "keeps less than a tenth of its margin above chance, or ends at or below chance (100 → 2.5 exact match "
          "with chance 0 is catastrophic). For perplexity (relative rise; retain's mapping, the grading covers "
          "scores only): mild < +10%, moderate +10% to +50%, severe > +50%, catastrophic ×10 or more (as unsure as "
          "choosing among ten times as many words), or, where a chance perplexity is recorded, at or above it or "
          "keeping less than a tenth of the margin below it. A gain or a change not shown (95% CI includes 0, or "
          "seeds disagree) is graded none.")


def severity(row: dict) -> str:
    """The grade of one row of `compare` (keys: verdict, relative, delta, before, after, lower_is_better, chance)."""
    if row["verdict"] != "worse":
        return "none"
    chance = row.get("chance")
    lower_is_better = row["lower_is_better"]
    if chance is not None:
        at_chance = row["after"] >= chance if lower_is_better else row["after"] <= chance + 1e-9
        kept = margin_kept(row["before"], row["after"], chance, lower_is_better, log=row["relative"])
        if at_chance or (kept is not None and round(kept, 9) < MARGIN_KEPT_CATASTROPHIC):
            return "catastrophic"
    if row["relative"]:
        rise = round(row["delta"], 9)  # 0.1 is not 0.1000000000000001
        if rise >= PERPLEXITY_CATASTROPHIC:
            return "catastrophic"
        return "severe" if rise > PERPLEXITY_SEVERE else "moderate" if rise >= PERPLEXITY_MODERATE else "mild"
    points = round(100 * abs(row["delta"]), 9)  # 0.85 - 0.7 is 15.000000000000002 points
    return "severe" if points > POINTS_SEVERE else "moderate" if points >= POINTS_MODERATE else "mild"


def rank(grade: str) -> int:
    return SEVERITIES.index(grade)


def worst(grades) -> str:
    """The worst of `grades` ("none" if there are none)."""
    return max(grades, key=rank, default="none")

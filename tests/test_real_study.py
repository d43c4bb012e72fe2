"""tools/real_study.py on a small synthetic seeded sweep, and the target it judges (retain.studies.sweep.target)."""

import json
from pathlib import Path

import pytest

from retain.studies.sweep.target import judge_target
from retain.studies.tune.report import target_record
from tools.real_study import main

REPO = Path(__file__).resolve().parent.parent
N = 100  # items per task
SEEDS = (0, 1, 2)


def _generation(correct: set[int], capability: str, answer: str) -> dict:
    items = [{"id": i, "contains": float(i in correct), "exact_match": float(i in correct),
              "prediction": answer if i in correct else "no idea", "context": f"question {i}", "target": answer}
             for i in range(N)]
    return {"kind": "generation", "capability": capability, "primary_metric": "contains", "lower_is_better": False,
            "chance": 0.0, "n": N, "metrics": {"contains": len(correct) / N, "exact_match": len(correct) / N},
            "items": items}


def _results(task: set[int], chat: set[int], text_loglikelihood: float = -20.0) -> dict:
    # MMLU-like: the top choice is always A, right on half the items (letter bias)
    choice = [{"id": i, "acc": float(i % 2 == 0), "acc_norm": float(i % 2 == 0),
               "loglikelihoods": [-1.0, -2.0, -3.0, -4.0]} for i in range(N)]
    text = [{"id": i, "loglikelihood": text_loglikelihood, "words": 5, "bytes": 25, "tokens": 7} for i in range(N)]
    return {"model": "tiny", "dtype": "float32", "split": "test", "tasks": {
        "mmlu": {"kind": "multiple_choice", "capability": "choice facts", "primary_metric": "acc",
                   "lower_is_better": False, "chance": 0.25, "n": N, "metrics": {"acc": 0.5, "acc_norm": 0.5},
                   "items": choice},
        "text": {"kind": "perplexity", "capability": "plain text", "primary_metric": "word_perplexity",
                 "lower_is_better": True, "chance": None, "n": N, "metrics": {"word_perplexity": 54.6},
                 "items": text},
        "chat": _generation(chat, "chat answers", "Paris"),
        "task": _generation(task, "task: city -> country", "France")}}


def _seeded(strategy: str, seed: int) -> dict:
    """Per seed: the unprotected run learns 20 + seed task items and forgets 60 + seed of the 100 chat answers; the
    recipes learn the same items and forget fewer answers; "bad" also loses plain text (perplexity ×2.2)."""
    learned = set(range(20 + seed))
    lost = {"unprotected": 60 + seed, "good": 1, "bad": 30, "uneven": (0, 0, 9)[seed]}[strategy]
    return _results(task=learned, chat=set(range(lost, N)), text_loglikelihood=-24.0 if strategy == "bad" else -20.0)


def _halfway(strategy: str, seed: int) -> dict:
    """A run's WiSE-FT point halfway to the base: half its task items learned, half its chat answers lost."""
    learned = set(range((20 + seed) // 2))
    lost = {"unprotected": 60 + seed, "good": 1, "bad": 30, "uneven": (0, 0, 9)[seed]}[strategy] // 2
    return _results(task=learned, chat=set(range(lost, N)))


def _write_sweep(tmp_path: Path, stem: str, base_config: str, model: str, strategies: tuple[str, ...],
                 missing: tuple[str, ...] = (), line: bool = False) -> Path:
    """A sweep config `<stem>.yaml` whose files are in tmp_path/<stem> (not its `output`); `missing`: results files
    (e.g. "bad.seed2") left unwritten; `line`: each run also scored halfway to the base (`line: [0.5]`)."""
    out = tmp_path / stem
    (out / "results").mkdir(parents=True)
    (out / "base.json").write_text(json.dumps({**_results(task=set(), chat=set(range(N))), "model": model}))
    for name in strategies:
        for seed in SEEDS:
            if f"{name}.seed{seed}" not in missing:
                result = {**_seeded(name, seed), "model": model}
                (out / "results" / f"{name}.seed{seed}.json").write_text(json.dumps(result))
                if line:
                    (out / "line" / f"{name}.seed{seed}").mkdir(parents=True)
                    (out / "line" / f"{name}.seed{seed}" / "alpha-0.5.json").write_text(
                        json.dumps({**_halfway(name, seed), "model": model}))
    (out / "wall_seconds").write_text("7200\n")
    path = tmp_path / f"{stem}.yaml"
    # the sweep's files are read from --sweep-dir (a copy of the study's), not from its `output`
    path.write_text(f"base: {REPO / base_config}\ntask: task\nsuite: tiny\n"
                    f"output: {tmp_path / 'gone'}\n"
                    f"limit: {N}\nseeds: [0, 1, 2]\n" + ("line: [0.5]\n" if line else "") + "strategies:\n"
                    + "".join(f"  {n}: {{training.lr: {1e-4 / (k + 1)}}}\n" for k, n in enumerate(strategies)))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return _write_sweep(tmp_path, "sweep", "configs/real/smollm2-city.yaml", "tiny",
                        ("unprotected", "good", "bad", "uneven"))


@pytest.fixture
def gemma_sweep(tmp_path: Path) -> Path:
    """A second model's sweep; its "bad" recipe stopped after two of its three seeds."""
    return _write_sweep(tmp_path, "gemma", "configs/real/gemma-city.yaml", "tiny-gemma", ("unprotected", "good", "bad"),
                        missing=("bad.seed2",), line=True)


def _rows(section: str) -> dict[str, str]:
    return {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}


def test_the_target_holds_by_hand_shares_and_margins():
    base = _results(task=set(), chat=set(range(N)))
    reference = [_seeded("unprotected", s) for s in SEEDS]
    good = judge_target(base, reference, [_seeded("good", s) for s in SEEDS], "task")
    # the same task items learned: 100% of the gain; forgetting over the pooled 200 retained items
    assert good.gain.share == pytest.approx(1.0)
    assert good.gain.per_seed_share == pytest.approx((1.0, 1.0, 1.0))
    assert good.forgetting.per_seed_share == pytest.approx((1 / 60, 1 / 61, 1 / 62))
    assert good.forgetting.margin == pytest.approx((0.1 * 61 - 1) / 200)  # 0.1 · mean reference loss - recipe's
    assert good.verdict == "met", good.reason
    bad = judge_target(base, reference, [_seeded("bad", s) for s in SEEDS], "task")
    assert bad.forgetting.share == pytest.approx(30 / 61)
    assert bad.verdict == "not met" and "forgetting: 49% of the reference's forgetting" in bad.reason
    uneven = judge_target(base, reference, [_seeded("uneven", s) for s in SEEDS], "task")
    assert uneven.forgetting.met  # 3 answers lost on average, under a tenth of 61 (seed 2: 9, over 6.2)
    assert uneven.verdict == "not shown" and "seed 2 misses the forgetting line" in uneven.reason
    nothing = judge_target(base, [base] * 3, reference, "task")
    assert nothing.verdict == "cannot be judged"


def test_the_study_doc_has_the_target_per_recipe_and_every_seed(sweep: Path, tmp_path: Path):
    doc = main([str(sweep), "--out", str(tmp_path / "docs"), "--no-screenshot", "--sweep-dir", str(tmp_path / "sweep")]
               ).read_text()
    rows = _rows(doc.split("### The target")[1].split("\n### ")[0])
    assert "| **met** |" in rows["good"]
    assert "**not met**: forgetting: 49% of the reference's forgetting" in rows["bad"]
    assert rows["bad"].endswith("| plain text ×2 (severe) |") and rows["good"].endswith("| none |")
    assert "**not shown**: " in rows["uneven"] and "seed 2 misses the forgetting line" in rows["uneven"]
    # shares of the reference's gain and forgetting, then each seed's: 9 of seed 2's 62 answers is 15%
    assert "| 100%, 100%, 100% | 5% [" in rows["uneven"] and "| 0%, 0%, 15% |" in rows["uneven"]
    assert "Recipes that meet it: good (tiny)." in doc
    # per capability: the mean over seeds, then each seed's change (unprotected loses 60, 61, 62 of 100 chat answers)
    chat = next(line for line in doc.splitlines() if line.startswith("| unprotected | chat answers |"))
    assert "-61.0 pts" in chat and "| -60.0, -61.0, -62.0 | supported (worse) |" in chat
    uneven = next(line for line in doc.splitlines() if line.startswith("| uneven | chat answers | 100 |"))
    assert "| +0.0, +0.0, -9.0 | not shown (" in uneven
    assert f"install excluded: 2 h 00 min (`{tmp_path / 'sweep' / 'wall_seconds'}`: its sittings added up)." in doc
    assert "this study ran one: tiny (`" in doc and "not run" not in doc
    assert "- tiny: of 3 recipes judged, `good` met the target; `bad`: not met; `uneven`: not shown." in doc
    assert "![Pareto plot](real-model-sweep-pareto.png)" in doc
    assert (tmp_path / "docs/real-model-sweep-pareto.png").is_file()
    assert "### unprotected: answers that changed" in doc
    assert "**MMLU here measures letter bias, not knowledge**: base picks A on 100 of 100" in doc


def test_two_models_make_one_doc_and_a_recipe_short_of_seeds_is_left_out(sweep: Path, gemma_sweep: Path,
                                                                         tmp_path: Path):
    docs = tmp_path / "docs"
    (tmp_path / "gemma" / "wall_seconds").write_text("5071\n")  # gemma's study: 1 h 24 min
    doc = main([str(sweep), str(gemma_sweep), "--out", str(docs), "--no-screenshot",
                "--sweep-dir", str(tmp_path / "sweep"), "--sweep-dir", str(tmp_path / "gemma")]).read_text()
    assert "this study ran both: tiny (`" in doc
    overview = doc.split("## The target, per model")[1].split("\n## ")[0]
    rows = [line for line in overview.splitlines() if line.startswith("| tiny")]
    # one table: every judged recipe of both models, in the sweeps' order; gemma's "bad" has 2 of 3 seeds: left out
    assert [row.split(" | ")[:2] for row in rows] == [["| tiny", "good"], ["| tiny", "bad"], ["| tiny", "uneven"],
                                                       ["| tiny-gemma", "good"]]
    assert "| **met** | 100% [" in rows[3]
    assert "- tiny-gemma: of 1 recipe judged (bad: 2 of 3 seeds left out), `good` met the target." in overview
    assert "Recipes that meet it: good (tiny), good (tiny-gemma)." in overview
    gemma = doc.split("## tiny-gemma (`gemma`)")[1]
    assert "## tiny (`sweep`)" in doc.split("## tiny-gemma (`gemma`)")[0]
    assert "`bad` has results for 2 of its 3 training seeds." in gemma
    assert not any(line.startswith("| bad |") for line in gemma.splitlines())
    assert set(_rows(gemma.split("### The target")[1].split("\n### ")[0])) == {"recipe", "good"}
    assert gemma.count(f"install excluded: 1 h 24 min (`{tmp_path / 'gemma' / 'wall_seconds'}`: its sittings "
                       "added up).") == 1
    assert doc.count("install excluded: 2 h 00 min") == 1
    # gemma's sweep scored each run halfway to the base: its forgetting at matched gain is read off those lines
    matched = gemma.split("### Forgetting at matched task gain")[1].split("\n### ")[0]
    assert "Not measured" not in matched and "first reaches 95% of the unprotected run's task gain" in matched
    assert set(_rows(matched)) == {"recipe", "unprotected", "good"}
    # and the line's points as scored: halfway, the unprotected runs learned 10, 10, 11 task items of 100 and lost
    # 30, 30, 31 chat answers (pooled with 100 unchanged choice items: -15.2 points); "good" lost none
    line_section = gemma.split("### The WiSE-FT line as scored")[1].split("\n### ")[0]
    scored = _rows(line_section.split("Per capability")[0])
    assert set(scored) == {"strategy", "unprotected at alpha 0.5", "good at alpha 0.5"}
    assert scored["unprotected at alpha 0.5"].startswith("| unprotected at alpha 0.5 | +10.3 [")
    assert "| -15.2 [" in scored["unprotected at alpha 0.5"] and "| +0.0 [" in scored["good at alpha 0.5"]
    # and per capability: unprotected halfway loses 30, 30, 31 of its 100 chat answers
    chat = [line for line in line_section.splitlines()
            if line.startswith("| unprotected at alpha 0.5 | chat answers | 100 |")]
    assert len(chat) == 1 and "| -30.0, -30.0, -31.0 | supported (worse) |" in chat[0]
    assert "Not scored in this study" in doc.split("## tiny-gemma (`gemma`)")[0]
    assert "Not measured in this study" in doc.split("## tiny-gemma (`gemma`)")[0]
    for stem in ("sweep", "gemma"):
        assert f"![Pareto plot](real-model-{stem}-pareto.png)" in doc
        assert (docs / f"real-model-{stem}-pareto.png").is_file()
    with pytest.raises(SystemExit):  # one --sweep-dir for two sweeps
        main([str(sweep), str(gemma_sweep), "--out", str(docs), "--sweep-dir", str(tmp_path / "sweep")])


def test_a_sweep_not_run_is_said_so(sweep: Path, tmp_path: Path):
    empty = tmp_path / "gemma.yaml"
    empty.write_text(sweep.read_text().replace("configs/real/smollm2-city.yaml", "configs/real/gemma-city.yaml"))
    doc = main([str(sweep), str(empty), "--out", str(tmp_path / "docs"), "--no-screenshot",
                "--sweep-dir", str(tmp_path / "sweep"), "--sweep-dir", str(tmp_path / "never")]).read_text()
    assert f"this study ran one: tiny (`{sweep}`); not run: gemma3-270m (`{empty}`)." in doc
    assert f"- gemma3-270m (`{empty}`): not run." in doc
    section = doc.split("## gemma3-270m (`gemma`)")[1]
    assert section.strip() == f"Not run: `{tmp_path / 'never'}` has no base.json (`retain sweep {empty}` writes them)."
    assert "| tiny | good | **met** |" in doc
    (tmp_path / "started").mkdir()  # scored the base model, trained nothing yet
    (tmp_path / "started/base.json").write_text((tmp_path / "sweep/base.json").read_text())
    doc = main([str(sweep), str(empty), "--out", str(tmp_path / "docs"), "--no-screenshot",
                "--sweep-dir", str(tmp_path / "sweep"), "--sweep-dir", str(tmp_path / "started")]).read_text()
    assert f"Not run: `{tmp_path / 'started'}` has no results" in doc and "; not run: gemma3-270m" in doc


def test_a_sweep_cut_short_after_the_unprotected_runs_still_makes_its_section(sweep: Path, tmp_path: Path):
    # the second model's study stopped after its unprotected seeds (every recipe short of a seed): its section shows
    # the reference alone, its report compares base and unprotected once (the best run is the reference itself)
    short = _write_sweep(tmp_path, "short", "configs/real/gemma-city.yaml", "tiny-gemma", ("unprotected", "good"),
                         missing=("good.seed1", "good.seed2"))
    doc = main([str(sweep), str(short), "--out", str(tmp_path / "docs"), "--no-screenshot",
                "--sweep-dir", str(tmp_path / "sweep"), "--sweep-dir", str(tmp_path / "short")]).read_text()
    section = doc.split("## tiny-gemma (`short`)")[1]
    assert "`good` has results for 1 of its 3 training seeds." in section
    assert "`retain report` of base, unprotected (3 seeds each)" in section


def test_forgetting_at_matched_gain_is_shown_where_the_sweep_scored_its_lines():
    from tools.real_study import matched_gain_lines

    assert matched_gain_lines({"rows": {}})[0].startswith("Not measured in this study")
    seed = [{"change": -0.5, "ci": [-0.6, -0.4], "position": 3.0},
            {"change": -0.3, "ci": [-0.4, -0.2], "position": 3.0}]
    summary = {"matched_gain": {
        "unprotected": {"share": 0.95, "mean": -0.4, "ci": [-0.5, -0.3], "per_seed": seed},
        "lora": {"share": 0.95, "mean": None,
                 "per_seed": [{"change": -0.1, "ci": [-0.2, 0.0], "position": 2.5}, None]}}}
    lines = matched_gain_lines(summary)
    assert "95% of the unprotected run's task gain" in lines[0]
    assert "| unprotected | -40.0 [-50.0, -30.0] | -50.0 [-60.0, -40.0]; -30.0 [-40.0, -20.0] |" in lines
    assert "| lora | — | -10.0 [-20.0, +0.0]; never reached |" in lines


def test_the_recipe_retain_tune_found_is_judged_beside_the_sweeps(sweep: Path, tmp_path: Path):
    """--tune: a study's summary.json (its against_reference, as retain tune writes it) becomes a row; a study not
    run says so."""
    base = _results(task=set(), chat=set(range(N)))
    target = judge_target(base, [_seeded("unprotected", s) for s in SEEDS], [_seeded("uneven", s) for s in SEEDS],
                          "task")
    tuned = tmp_path / "tune-tiny"
    (tuned / "test").mkdir(parents=True)
    (tuned / "test" / "base.json").write_text(json.dumps(base))
    (tuned / "summary.json").write_text(json.dumps({"tune": {
        "recommended": "trial-1", "trials": {"trial-1": {"overrides": {"training.lr": 3e-5}}},
        "against_reference": {"seeds": list(SEEDS), **target_record(target)}}}))
    doc = main([str(sweep), "--out", str(tmp_path / "docs"), "--no-screenshot", "--sweep-dir", str(tmp_path / "sweep"),
                "--tune", str(tuned), "--tune", str(tmp_path / "tune-never")]).read_text()
    assert f"`python -m tools.real_study {sweep} --tune {tuned} --tune {tmp_path / 'tune-never'}`" in doc
    section = doc.split("## The recipe `retain tune` found, per model")[1].split("\n## ")[0]
    rows = _rows(section)
    row = rows[f"`{tuned}`"]
    assert "| tiny | trial-1 (`training.lr: 3e-05`) | **not shown**: " in row and "seed 2 misses the forgetting" in row
    # the same shares and per-seed values as the sweep's own row for that recipe
    assert "| 100%, 100%, 100% | 5% [" in row and "| 0%, 0%, 15% |" in row
    assert f"+{100 * target.gain.margin:.1f} [" in row
    assert "not run (`retain tune` writes" in rows[f"`{tmp_path / 'tune-never'}`"]

"""lm-eval task YAMLs run as retain capabilities: lm-eval's prompts and metrics, retain's scorer, lm-eval's scores.

Each parity task `include:`s a YAML shipped in lm-eval's own tree and only points it at a small local
data file in that dataset's schema; lm-eval (its HF backend) and retain then score the same tiny model.
Runtime ≈ 25–30 s on 2 idle CPU cores, ~10 s of it lm-eval indexing its own task tree once (`lm-eval:NAME`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from retain.core.schema import ConfigError
from retain.evaluation.stats import paired_bootstrap, statistic
from conftest import write_jsonl

lm_eval = pytest.importorskip("lm_eval")

from retain.evaluation.lm import LM  # noqa: E402
from retain.evaluation.tasks.lm_eval_harness import (  # noqa: E402
    _task_manager, load_lm_eval_tasks, looks_like_lm_eval_file, looks_like_lm_eval_yaml)

SHIPPED = Path(lm_eval.__file__).parent / "tasks"  # lm-eval's own task YAMLs
WORDS = "the capital of france is paris japan tokyo one plus two three red green blue river mountain city".split()


def words(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


def arc_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        k = 5 if i == offset + 3 else 4  # ARC has a few 3- and 5-choice questions
        labels = "ABCDE"[:k]
        rows.append({"id": f"q{i}", "question": words(i, 6) + " ?", "answerKey": labels[i % k],
                     "choices": {"text": [words(i + j, 1 + j % 3) for j in range(k)], "label": list(labels)}})
    return rows


def hellaswag_rows(n: int) -> list[dict]:
    return [{"ind": i, "activity_label": words(i, 2), "ctx_a": words(i, 5), "ctx_b": words(i + 1, 2),
             "ctx": words(i, 5) + " " + words(i + 1, 2), "endings": [words(i + j, 3 + j) for j in range(4)],
             "source_id": f"src{i}", "split": "val", "split_type": "indomain", "label": str(i % 4)}
            for i in range(n)]


def mmlu_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"question": words(i, 7) + " ?", "subject": "high_school_geography",
             "choices": [words(i + j, 2) for j in range(4)], "answer": i % 4} for i in range(offset, offset + n)]


def wikitext_rows(n: int) -> list[dict]:
    # several pages longer than the model's 256 positions: scored in windows
    return [{"page": " = " + words(i, 3) + " = \n " + " ".join(words(i + k, 9) + " ." for k in range(2 + 9 * i))}
            for i in range(n)]


def gsm8k_rows(n: int) -> list[dict]:
    return [{"question": f"{words(i, 4)} {i} plus {i + 2} ?", "answer": f"{words(i, 3)} #### {2 * i + 2}"}
            for i in range(n)]


def write_task(directory: Path, name: str, include: Path, **overrides) -> Path:
    """A task YAML that includes `include` and overrides keys (JSON is YAML, so values are dumped as JSON)."""
    lines = [f"include: {json.dumps(str(include))}", f"task: {name}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in overrides.items()]
    path = directory / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def local_data(directory: Path, name: str, splits: dict[str, list[dict]]) -> dict:
    """dataset_path/dataset_name/dataset_kwargs reading `splits` from JSONL files."""
    files = {split: str(write_jsonl(directory / f"{name}.{split}.jsonl", rows)) for split, rows in splits.items()}
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}


@pytest.fixture(scope="module")
def task_yamls(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lm_eval_yamls")
    arc = local_data(d, "arc", {"train": arc_rows(8, 100), "validation": arc_rows(10, 50), "test": arc_rows(16)})
    mmlu = local_data(d, "mmlu", {"test": mmlu_rows(14), "dev": mmlu_rows(5, 200)})
    yamls = {
        "arc_local": write_task(d, "arc_local", SHIPPED / "arc/arc_easy.yaml", **arc),
        "hellaswag_local": write_task(d, "hellaswag_local", SHIPPED / "hellaswag/hellaswag.yaml", **local_data(
            d, "hellaswag", {"validation": hellaswag_rows(14)}), training_split=None),
        "mmlu_geo_local": write_task(d, "mmlu_geo_local", SHIPPED / "mmlu/default/mmlu_high_school_geography.yaml",
                                     **mmlu),
        "arc_fewshot": write_task(d, "arc_fewshot", SHIPPED / "arc/arc_easy.yaml", **arc, num_fewshot=2,
                                  description="Answer the science question.\n\n"),
        "mmlu_fewshot": write_task(d, "mmlu_fewshot", SHIPPED / "mmlu/default/mmlu_high_school_geography.yaml",
                                   **mmlu, num_fewshot=2),
        "wikitext_local": write_task(d, "wikitext_local", SHIPPED / "wikitext/wikitext.yaml", **local_data(
            d, "wikitext", {"train": wikitext_rows(2), "validation": wikitext_rows(2), "test": wikitext_rows(6)})),
        "gsm8k_local": write_task(d, "gsm8k_local", SHIPPED / "gsm8k/gsm8k.yaml", **local_data(
            d, "gsm8k", {"train": gsm8k_rows(4), "test": gsm8k_rows(10)}), num_fewshot=1,
            generation_kwargs={"until": ["Question:", "\n\n"], "do_sample": False, "max_gen_toks": 12}),
    }
    # retain's "dev" split is lm-eval's task evaluated on its validation split
    yamls["arc_local_dev"] = write_task(d, "arc_local_dev", yamls["arc_local"], test_split="validation")
    return yamls


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def run_lm_eval(model_and_tokenizer, tasks: list[str], task_manager) -> dict:
    """lm-eval's own evaluation: its HF backend on the same in-memory model, default seeds."""
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = model_and_tokenizer
    return lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=tasks,
                                   task_manager=task_manager, bootstrap_iters=0, log_samples=True)


@pytest.fixture(scope="module")
def theirs(model_and_tokenizer, task_yamls) -> dict:
    from lm_eval.tasks import TaskManager

    # Only the YAMLs written here: they include lm-eval's files by path, so its index is not needed.
    manager = TaskManager(include_path=str(next(iter(task_yamls.values())).parent), include_defaults=False)
    return run_lm_eval(model_and_tokenizer, list(task_yamls), manager)


def ours(model_and_tokenizer, spec, split: str = "test", **kwargs):
    (task,) = load_lm_eval_tasks(spec)
    model, tokenizer = model_and_tokenizer
    return (task, *task.score(LM(model, tokenizer, batch_size=8), split, **kwargs))


@pytest.mark.parametrize("name", ["arc_local", "hellaswag_local", "mmlu_geo_local", "arc_fewshot", "mmlu_fewshot"])
def test_multiple_choice_matches_lm_eval(model_and_tokenizer, task_yamls, theirs, name):
    task, metrics, records = ours(model_and_tokenizer, task_yamls[name])
    expected = theirs["results"][name]
    for metric in ("acc", "acc_norm"):
        if f"{metric},none" in expected:
            assert metrics[metric] == pytest.approx(expected[f"{metric},none"], abs=1e-6)
    samples = theirs["samples"][name]
    assert [r["id"] for r in records] == [s["doc_id"] for s in samples]
    for record, sample in zip(records, samples):  # the same prompts, hence the same loglikelihoods
        assert record["loglikelihoods"] == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)
        assert record["acc"] == sample["acc"]
    assert task.kind == "multiple_choice" and task.primary_metric == "acc" and not task.lower_is_better
    paired_bootstrap(records, records, task.primary_metric)  # the shape the report pairs


def test_task_properties_come_from_the_yaml(task_yamls):
    arc, = load_lm_eval_tasks(task_yamls["arc_local"])
    hellaswag, = load_lm_eval_tasks(task_yamls["hellaswag_local"])
    mmlu, = load_lm_eval_tasks(task_yamls["mmlu_geo_local"])
    assert (arc.name, arc.group, arc.chance) == ("arc_local", "ai2_arc", None)  # tag; one 5-choice question
    assert (hellaswag.group, hellaswag.chance) == ("multiple_choice", 0.25)
    assert (mmlu.group, mmlu.chance, mmlu.description) == ("mmlu_social_sciences_tasks", 0.25, "high_school_geography")
    arc.check("test"), arc.check("dev"), mmlu.check("test")
    with pytest.raises(ConfigError, match="hellaswag_local has no dev split"):
        hellaswag.check("dev")  # lm-eval evaluates hellaswag's validation split: there is no other
    with pytest.raises(ConfigError, match="no dev split"):
        mmlu.check("dev")


def test_group_yaml_expands_to_its_tasks(model_and_tokenizer, task_yamls, tmp_path):
    write_task(tmp_path, "geo", task_yamls["mmlu_geo_local"])
    write_task(tmp_path, "science", task_yamls["arc_local"])
    (tmp_path / "my_suite.yaml").write_text("group: my_suite\ntask: [geo, science]\n")
    tasks = load_lm_eval_tasks(tmp_path / "my_suite.yaml")
    assert [(t.name, t.group) for t in tasks] == [("geo", "my_suite"), ("science", "my_suite")]
    model, tokenizer = model_and_tokenizer
    same_batches = LM(model, tokenizer, batch_size=8)  # as `ours`, so even the float noise agrees
    assert tasks[1].score(same_batches, "test") == ours(model_and_tokenizer, task_yamls["arc_local"])[1:]


def test_dev_split_is_the_task_on_its_validation_split(model_and_tokenizer, task_yamls, theirs):
    _, metrics, records = ours(model_and_tokenizer, task_yamls["arc_local"], "dev")
    assert len(records) == 10
    for metric in ("acc", "acc_norm"):
        assert metrics[metric] == pytest.approx(theirs["results"]["arc_local_dev"][f"{metric},none"], abs=1e-6)


def test_limit_scores_the_first_documents(model_and_tokenizer, task_yamls):
    _, _, full = ours(model_and_tokenizer, task_yamls["arc_fewshot"])
    _, metrics, first = ours(model_and_tokenizer, task_yamls["arc_fewshot"], limit=5)
    # few-shot examples drawn in the same order: same prompts, so the same scores (to float32 rounding: which
    # documents share a cached few-shot prefix depends on the documents scored together)
    assert [(r["id"], r["acc"], r["acc_norm"]) for r in first] == [(r["id"], r["acc"], r["acc_norm"]) for r in full[:5]]
    for part, whole in zip(first, full[:5]):
        assert part["loglikelihoods"] == pytest.approx(whole["loglikelihoods"], rel=1e-6)
    assert metrics["acc"] == pytest.approx(sum(r["acc"] for r in first) / 5)


def test_rolling_perplexity_matches_lm_eval(model_and_tokenizer, task_yamls, theirs):
    task, metrics, records = ours(model_and_tokenizer, task_yamls["wikitext_local"])
    expected = theirs["results"]["wikitext_local"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert metrics[metric] == pytest.approx(expected[f"{metric},none"], rel=1e-6)
    assert max(r["tokens"] for r in records) > 256  # longer than the model: several windows
    # wikitext counts words before detokenizing; the records carry the task's counts, so the report's
    # pooled perplexity is lm-eval's
    for metric in ("word_perplexity", "byte_perplexity"):
        assert statistic(records, metric) == pytest.approx(metrics[metric], rel=1e-9)
    assert (task.kind, task.primary_metric, task.lower_is_better) == ("perplexity", "word_perplexity", True)


def test_generation_with_filters_matches_lm_eval(model_and_tokenizer, task_yamls, theirs):
    task, metrics, records = ours(model_and_tokenizer, task_yamls["gsm8k_local"])
    expected = theirs["results"]["gsm8k_local"]
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)
    generated = {s["doc_id"]: s["resps"][0][0] for s in theirs["samples"]["gsm8k_local"]}
    assert [r["prediction"] for r in records] == [generated[r["id"]] for r in records]
    assert any(r["prediction"].strip() for r in records)  # something was generated, and it agrees
    assert (task.kind, task.primary_metric) == ("generation", "exact_match,strict-match")
    paired_bootstrap(records, records, task.primary_metric)


def write_hf_cache(cache: Path, repo: str, config: str, splits: dict[str, list[dict]], scratch: Path) -> None:
    """Put `splits` where datasets.load_dataset(repo, config) finds them offline (datasets' cache layout)."""
    import datasets

    files = {s: str(write_jsonl(scratch / f"{s}.jsonl", rows)) for s, rows in splits.items()}
    builder = datasets.load_dataset_builder("json", data_files=files, cache_dir=str(scratch / "build"))
    builder.download_and_prepare()
    namespace, name = repo.split("/")
    target = cache / f"{namespace}___{name}" / config / "0.0.0" / "local"
    shutil.copytree(builder.cache_dir, target)
    for arrow in target.glob("json-*.arrow"):
        arrow.rename(target / arrow.name.replace("json-", f"{name}-"))
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": config}))


def test_registered_task_reads_the_datasets_cache(model_and_tokenizer, tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "hf_datasets"
    write_hf_cache(cache, "allenai/ai2_arc", "ARC-Easy",
                   {"train": arc_rows(6, 100), "validation": arc_rows(6, 50), "test": arc_rows(12)}, tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    task, metrics, records = ours(model_and_tokenizer, "lm-eval:arc_easy")
    assert (task.name, task.group, len(records)) == ("arc_easy", "ai2_arc", 12)
    registry = _task_manager(None, True)  # lm-eval's full index, already built by the load above (≈10 s)
    expected = run_lm_eval(model_and_tokenizer, ["arc_easy"], registry)["results"]["arc_easy"]
    assert metrics["acc"] == pytest.approx(expected["acc,none"], abs=1e-6)
    assert metrics["acc_norm"] == pytest.approx(expected["acc_norm,none"], abs=1e-6)

    with pytest.raises(ConfigError, match="datasets cache"):  # ARC-Challenge is not in this cache
        load_lm_eval_tasks("lm-eval:arc_challenge")
    with pytest.raises(ConfigError, match="did you mean arc_easy"):
        load_lm_eval_tasks("lm-eval:arc_eazy")


def test_unsupported_settings_name_the_file_and_key(task_yamls, tmp_path):
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text(f"include: {json.dumps(str(task_yamls['arc_local']))}\ntask: bogus\noutput_type: ranking\n")
    with pytest.raises(ConfigError, match=r"bogus\.yaml: output_type: 'ranking'"):
        load_lm_eval_tasks(bogus)
    sampled = write_task(tmp_path, "sampled", task_yamls["gsm8k_local"],
                         generation_kwargs={"until": ["\n"], "do_sample": True, "temperature": 0.7})
    with pytest.raises(ConfigError, match=r"sampled\.yaml: generation_kwargs\.do_sample"):
        load_lm_eval_tasks(sampled)
    beams = write_task(tmp_path, "beams", task_yamls["gsm8k_local"],
                       generation_kwargs={"until": ["\n"], "num_beams": 4})
    with pytest.raises(ConfigError, match=r"beams\.yaml: generation_kwargs\.num_beams"):
        load_lm_eval_tasks(beams)
    one_beam = write_task(tmp_path, "one_beam", task_yamls["gsm8k_local"],
                          generation_kwargs={"until": ["\n"], "num_beams": 1, "temperature": 0.0})
    assert load_lm_eval_tasks(one_beam)[0].kind == "generation"  # plain greedy, as several shipped tasks say
    with pytest.raises(ConfigError, match="missing.yaml: not found"):
        load_lm_eval_tasks(tmp_path / "missing.yaml")


def test_missing_lm_eval_says_how_to_install(monkeypatch, task_yamls):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'retain\[lm-eval\]'"):
        load_lm_eval_tasks(task_yamls["arc_local"])


def test_format_detection(task_yamls):
    assert looks_like_lm_eval_file(task_yamls["hellaswag_local"])
    assert looks_like_lm_eval_file(SHIPPED / "hellaswag/hellaswag.yaml")  # `!function` is no obstacle
    assert looks_like_lm_eval_yaml({"group": "g", "task": ["a", "b"]})
    assert not looks_like_lm_eval_yaml({"name": "mc", "kind": "multiple_choice", "data": {"test": "x.jsonl"}})
    assert not looks_like_lm_eval_yaml({"name": "lab", "tasks": ["a.yaml"]})


def test_an_lm_eval_yaml_runs_directly_as_a_suite_of_retain_eval(tiny_model, task_yamls, theirs, tmp_path, capsys):
    """`retain eval MODEL --suite arc.yaml,hellaswag.yaml`: the CLI path, results file and all."""
    from retain.cli import main

    out = tmp_path / "results.json"
    suite = f"{task_yamls['arc_local']},{task_yamls['hellaswag_local']}"
    assert main(["eval", str(tiny_model), "--suite", suite, "--out", str(out)]) == 0
    results = json.loads(out.read_text())["tasks"]
    for name in ("arc_local", "hellaswag_local"):
        assert results[name]["metrics"]["acc"] == pytest.approx(theirs["results"][name]["acc,none"], abs=1e-6)
        assert results[name]["n"] == len(theirs["samples"][name])

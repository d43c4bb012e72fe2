"""Scorers against hand-computed values on a deterministic fake model (a fixed bigram table)."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from retain.evaluation import metrics as M
from retain.evaluation.lm import LM, rolling_windows, shared_prefixes
from retain.evaluation.runner import eval_dtype, evaluate, evaluate_path
from retain.evaluation.tasks import load_suite, load_task
from conftest import write_jsonl


class BigramLM(torch.nn.Module):
    """logits[t] = table[input_ids[t]]: the next token depends only on the current one."""

    def __init__(self, vocab: int, max_positions: int = 8):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))
        self.config = SimpleNamespace(max_position_embeddings=max_positions)

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.table[input_ids])

    def logprob(self, prev: int, nxt: int) -> float:
        return torch.log_softmax(self.table[prev], -1)[nxt].item()


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_loglikelihood_is_the_sum_over_continuation_tokens(tokenizer):
    model = BigramLM(len(tokenizer))
    lm = LM(model, tokenizer)
    ctx, cont = lm.encode_pair("the capital of", " france is")
    assert tokenizer.decode(cont) == " france is"
    whole = ctx + cont
    expected = sum(model.logprob(whole[i - 1], whole[i]) for i in range(len(ctx), len(whole)))
    (ll, greedy), = lm.loglikelihood([("the capital of", " france is")])
    assert ll == pytest.approx(expected, abs=1e-5)
    best = [int(model.table[whole[i - 1]].argmax()) for i in range(len(ctx), len(whole))]
    assert greedy == (best == cont)


def test_empty_context_conditions_on_the_prefix_token(tokenizer):
    model = BigramLM(len(tokenizer))
    lm = LM(model, tokenizer)
    cont = lm.encode("red")
    expected = model.logprob(lm.prefix_token, cont[0]) + sum(model.logprob(a, b) for a, b in zip(cont, cont[1:]))
    assert lm.loglikelihood([("", "red")])[0][0] == pytest.approx(expected, abs=1e-5)


def test_rolling_scores_every_token_once_across_windows(tokenizer):
    model = BigramLM(len(tokenizer), max_positions=4)  # force many windows
    lm = LM(model, tokenizer)
    text = "the capital of france is paris . one plus two is three"
    tokens = lm.encode(text)
    assert len(tokens) > 3 * lm.max_length
    expected = model.logprob(lm.prefix_token, tokens[0]) + sum(model.logprob(a, b) for a, b in zip(tokens, tokens[1:]))
    (ll, n), = lm.loglikelihood_rolling([text])
    assert n == len(tokens) and ll == pytest.approx(expected, abs=1e-4)


def test_rolling_windows_shape():
    pieces = list(rolling_windows(list(range(10)), prefix_token=-1, max_length=4))
    assert pieces[0] == ([-1, 0, 1, 2, 3], 4)
    assert sum(n for _, n in pieces) == 10
    assert all(len(ids) <= 5 for ids, _ in pieces)
    assert [ids[-n:] for ids, n in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_metric_definitions_by_hand():
    # acc picks the highest loglikelihood; acc_norm divides by the choice's length in characters
    assert M.multiple_choice_item([-2.0, -3.0], ["a", "bbbbbb"], gold=1) == {"acc": 0.0, "acc_norm": 1.0}
    items = [M.perplexity_item(-10.0, 5, "two words"), M.perplexity_item(-6.0, 3, "one")]
    agg = M.perplexity_aggregate(items)
    assert agg["word_perplexity"] == pytest.approx(math.exp(16 / 3))
    assert agg["byte_perplexity"] == pytest.approx(math.exp(16 / 12))
    assert agg["bits_per_byte"] == pytest.approx(16 / 12 / math.log(2))
    assert agg["token_perplexity"] == pytest.approx(math.exp(16 / 8))
    assert M.generation_item(" Paris", "Paris") == {"exact_match": 1.0, "contains": 1.0}
    assert M.generation_item(" Paris, France", "Paris") == {"exact_match": 0.0, "contains": 1.0}
    assert M.repetition_rate("a b c d a b c d".split()) == pytest.approx(1 / 5)
    assert M.distinct_n([["a", "b"], ["a", "c"]], 1) == pytest.approx(3 / 4)
    assert M.bleu("a b c d".split(), ["a b c d".split()]) == pytest.approx(1.0)
    assert M.bleu("a b c d".split(), ["x y z w".split()]) == 0.0
    assert M.bleu("a b c d".split(), ["a b x y".split()]) == pytest.approx((0.5 * 0.5 * (1 / 3) * 0.5) ** 0.25)


def test_suite_runs_every_kind_and_keeps_items(tiny_model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    write_jsonl(tmp_path / "g.jsonl", [{"prompt": "the capital of", "response": " france"}] * 3)
    (tmp_path / "g.yaml").write_text(
        f"name: g\nkind: generation\ndata: {{test: {tmp_path / 'g.jsonl'}, dev: {tmp_path / 'g.jsonl'}}}\nfields: {{context: prompt, target: response}}\n"
        "max_new_tokens: 3\n")
    tasks = load_suite("lab") + [load_task(tmp_path / "g.yaml")]
    results = evaluate(model, tokenizer, tasks, split="dev", limit=4, progress=False)["tasks"]
    assert {r["kind"] for r in results.values()} == {"generation", "multiple_choice", "perplexity", "diversity"}
    for name, r in results.items():
        assert len(r["items"]) == r["n"] <= 4, name
        assert r["primary_metric"] in r["metrics"]
    assert results["english"]["lower_is_better"] and not results["capital_recall"]["lower_is_better"]
    # a lab country task's records carry the country they are about (its `cluster`), a task without one has none
    countries = [i["cluster"] for i in results["capital_recall"]["items"]]
    assert countries == [i["cluster"] for i in results["capital_reverse"]["items"]] and all(countries)
    assert "cluster" not in results["addition"]["items"][0]
    assert all(len(i["prediction"].split()) <= 3 for i in results["g"]["items"])


def test_missing_field_in_task_data_names_the_line(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"context": "a", "target": "b"}, {"context": "a"}])
    (tmp_path / "t.yaml").write_text(f"name: t\nkind: generation\ndata: {{test: {tmp_path / 'd.jsonl'}}}\n")
    with pytest.raises(ValueError, match=r"d.jsonl:2: field 'target': missing"):
        load_task(tmp_path / "t.yaml").items("test")


def test_a_cluster_field_missing_from_an_item_names_the_line(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"context": "a", "target": "b", "country": "X"}, {"context": "a", "target": "b"}])
    (tmp_path / "t.yaml").write_text(f"name: t\nkind: generation\ndata: {{test: {tmp_path / 'd.jsonl'}}}\n"
                                     "cluster: country\n")
    with pytest.raises(ValueError, match=r"d.jsonl:2: field 'country' \(the task's cluster\): missing"):
        load_task(tmp_path / "t.yaml").items("test")


def test_sampled_evaluation_is_seeded_and_leaves_the_global_rng_alone(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    lm = LM(model, tokenizer)
    requests = [("the capital of", ("\n",), 6)] * 3
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = lm.generate_until(requests, sample=True, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == lm.generate_until(requests, sample=True, seed=7)


def test_shared_context_scoring_equals_scoring_each_choice_whole(tiny_model, tokenizer):
    """Multiple choice runs each context once (KV cache, left-padded batches); the scores must not move."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    contexts = ["the capital of france is", "question : what is one plus two ? answer :", "red", "the city"]
    choices = ["paris", "tokyo city", "blue river mountain", "3", "green green green red"]
    requests = [(c, " " + x) for c in contexts for x in choices[: 2 + len(c) % 4]] + [("", "red river")]
    shared = LM(model, tokenizer, batch_size=5).loglikelihood(requests)
    whole = LM(model, tokenizer, share_context=False).loglikelihood(requests)
    assert LM(model, tokenizer).shares_cache and len({c for c, _ in requests}) < len(requests)
    for (a, greedy_a), (b, greedy_b) in zip(shared, whole):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b


def test_shared_prefixes_group_contexts_that_start_alike():
    shots_a, shots_b = tuple(range(100, 120)), tuple(range(200, 220))  # two subjects' descriptions and shots
    contexts = [shots_a + (1, 2), shots_b + (5,), shots_a + (3,), (7, 8, 9), shots_b + (6, 6),
                shots_a[:3] + (4,) * 10,  # shares 3 tokens only: too short a start to cache
                shots_a,  # the shots alone: the prefix stops one short of it, so it keeps a token to run
                shots_b[:6] + (9,) * 10,  # sorts before subject b and shares 6: b's 20 are not cut to 6
                shots_b[:8] + (300,) * 5]  # sorts after subject b and shares 8: b's 20 are not cut to 8
    groups = sorted(shared_prefixes(contexts, min_shared=4))
    assert groups == [(19, [6, 0, 2]), (20, [1, 4])]
    assert shared_prefixes([shots_a + (1,)], min_shared=4) == []  # one context alone shares nothing
    assert shared_prefixes([shots_a + (1,), shots_a[:8] + (2,)], min_shared=4) == [(8, [1, 0])]  # two: saves 8


def test_few_shot_prompts_score_on_their_cached_prefix_as_scored_whole(tiny_model, tokenizer):
    """Contexts that start with the same shots run them once; the loglikelihoods equal whole-prompt scoring (fp32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, max_position_embeddings=1024, dtype=torch.float32).eval()
    shots = "".join(f"question : what is {a} plus {b} ? answer : {a + b}\n\n" for a, b in [(1, 2), (3, 4), (5, 6)])
    questions = [f"question : what is {a} plus {b} ? answer :" for a, b in [(2, 2), (7, 1), (4, 5), (0, 3), (6, 6)]]
    choices = [" 4", " 8", " three", " blue river"]  # one token and several
    requests = [(shots + q, c) for q in questions for c in choices]
    requests += [("the capital of france is", c) for c in choices] + [("red", " green")]  # no shared start
    read = []
    model.register_forward_pre_hook(lambda m, args, kwargs: read.append(
        (args[0] if args else kwargs["input_ids"]).numel()), with_kwargs=True)
    cached = LM(model, tokenizer, batch_size=3).loglikelihood(requests)
    read_cached, read[:] = sum(read), []
    whole = LM(model, tokenizer, share_context=False).loglikelihood(requests)
    assert len(LM(model, tokenizer).encode(shots)) > 32 and sum(read) > 2 * read_cached  # the shots ran once
    for (a, greedy_a), (b, greedy_b) in zip(cached, whole):
        assert a == pytest.approx(b, abs=1e-5) and greedy_a == greedy_b


@pytest.mark.parametrize("native, expected", [("1", "bfloat16"), ("0", "float32")])
def test_eval_dtype_auto_is_bf16_where_native_and_is_recorded(tiny_model, tmp_path, monkeypatch, native, expected):
    monkeypatch.setenv("RETAIN_NATIVE_BF16", native)
    assert eval_dtype("auto") == expected and eval_dtype("float32") == "float32"
    results = evaluate_path(str(tiny_model), "currency_choice", "test", tmp_path / "r.json", limit=2, dtype="auto",
                            progress=False)
    assert results["dtype"] == expected
    import json
    assert json.loads((tmp_path / "r.json").read_text())["dtype"] == expected


def test_task_data_paths_are_relative_to_the_task_yaml(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "tasks" / "data" / "g.jsonl", [{"context": "the capital of", "target": " paris"}])
    (tmp_path / "tasks" / "g.yaml").write_text("name: g\nkind: generation\ndata: {test: data/g.jsonl}\n")
    (tmp_path / "suite.yaml").write_text("name: s\ntasks: [tasks/g.yaml]\n")
    monkeypatch.chdir(tmp_path / "tasks" / "data")  # not where the YAML is
    (task,) = load_suite(str(tmp_path / "suite.yaml"))
    assert task.items("test")[0]["target"] == " paris"


def test_a_bad_task_is_reported_before_the_model_loads(tmp_path, monkeypatch):
    from retain.evaluation import runner
    from retain.evaluation.runner import evaluate_path

    (tmp_path / "t.yaml").write_text("name: t\nkind: generation\ndata: {test: missing.jsonl}\n")
    monkeypatch.setattr(runner, "load_for_eval", lambda *a, **k: pytest.fail("the model was loaded first"))
    with pytest.raises(ValueError, match="missing.jsonl"):
        evaluate_path("retain-tiny", str(tmp_path / "t.yaml"), "test")


def test_chat_task_renders_through_the_template_and_regex_extracts_the_answer(tokenizer, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"context": "capital of france ?", "target": "paris"}])
    (tmp_path / "c.yaml").write_text(
        "name: c\nkind: generation\ndata: {test: c.jsonl}\nchat: true\nsystem: be brief\n"
        "metric: regex_match\nanswer_regex: 'is (\\w+)'\n")
    task = load_task(tmp_path / "c.yaml")
    rendered = task.render("capital of france ?", tokenizer)
    assert rendered == tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of france ?"}],
        tokenize=False, add_generation_prompt=True)
    import re
    assert M.generation_item("The capital is paris.", "paris", re.compile(task.answer_regex))["regex_match"] == 1.0
    assert M.generation_item("paris", "paris", re.compile(task.answer_regex))["regex_match"] == 0.0
    (tmp_path / "bad.yaml").write_text("name: b\nkind: generation\ndata: {test: c.jsonl}\nmetric: acc\n")
    with pytest.raises(ValueError, match="metric: 'acc' is not a generation metric"):
        load_task(tmp_path / "bad.yaml")


def test_each_suite_part_goes_to_the_one_source_that_names_it(tmp_path):
    # retain.evaluation.tasks.SOURCES: mmlu and lm-eval registry names by their spelling, files by their format
    from retain.evaluation.tasks import FILE_SOURCES, SOURCES

    parts = {"mmlu": "mmlu", "mmlu:astronomy@5": "mmlu", "mmlu_cloze": "mmlu", "lm-eval:hellaswag": "lm-eval registry",
             "lab": None, "city_country": None, "suite.yaml": None}
    for part, source in parts.items():
        assert [s.name for s in SOURCES if s.names(part)] == ([source] if source else []), part
    lm_eval_yaml = tmp_path / "t.yaml"
    lm_eval_yaml.write_text("task: t\ndataset_path: json\noutput_type: multiple_choice\ndoc_to_text: q\n")
    retain_yaml = tmp_path / "r.yaml"
    retain_yaml.write_text("name: r\nkind: generation\ndata: {test: d.jsonl}\n")
    assert [s.name for s in FILE_SOURCES if s.names(lm_eval_yaml)] == ["lm-eval YAML"]
    assert [s.name for s in FILE_SOURCES if s.names(retain_yaml)] == []  # retain's own format: the default

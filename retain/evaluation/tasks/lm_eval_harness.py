"""lm-evaluation-harness tasks as retain capabilities: lm-eval builds the prompts, retain's LM scores them.

    tasks = load_lm_eval_tasks("my_task.yaml")   # a YAML in lm-eval's task format (include:, !function work)
    tasks = load_lm_eval_tasks("lm-eval:arc_easy")  # a task, group or tag in lm-eval's registry
    metrics, records = tasks[0].score(LM(model, tokenizer), "test")

What lm-eval defines, through its own API, so that scores equal `lm_eval --tasks ...` on the same
model: the documents and splits (process_docs included), the prompts (doc_to_text / doc_to_choice /
doc_to_target, description, delimiters, few-shot examples drawn with lm-eval's default few-shot
seed), the requests, the filters, the per-document metrics (process_results) and their aggregation.
What retain does: the model calls, with its own batched scorer (`LM.loglikelihood`,
`LM.loglikelihood_rolling`, `LM.generate_until`), and the per-document records its report pairs
across models (`"id"` is the document's index in the split).

Splits: "test" is lm-eval's evaluation split (test_split, else validation_split); "dev" is the
validation split of a task that also has a test split. lm-eval is an optional dependency:
`pip install 'retain[lm-eval]'`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from retain.core.schema import ConfigError
from retain.evaluation.metrics import perplexity_item

REGISTRY_PREFIX = "lm-eval:"
KIND = {"multiple_choice": "multiple_choice", "loglikelihood_rolling": "perplexity",
        "generate_until": "generation", "loglikelihood": "loglikelihood"}
# Keys only lm-eval's task format has (retain's own task format has `kind`, a suite `tasks`).
LM_EVAL_KEYS = {"output_type", "dataset_path", "include", "doc_to_text", "doc_to_target", "doc_to_choice",
                "metric_list", "group", "class", "custom_dataset", "process_docs"}
# generation_kwargs retain honours (until, max_gen_toks, do_sample: false) or that greedy decoding makes
# no-ops (temperature, top_p, top_k); any other key (num_beams, repetition_penalty...) would change the text.
GENERATION_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k"}
NO_OP_VALUES = {"num_beams": 1}  # other keys are fine at the value that is plain greedy decoding
# Per-document denominators the report knows for paired perplexities (retain.report.stats).
PAIRED_PERPLEXITIES = {"word_perplexity", "byte_perplexity"}
# lm-eval's per-document (loglikelihood, count) pairs, and the perplexity_item field each count fills.
COUNT_FIELDS = {"word_perplexity": "words", "byte_perplexity": "bytes", "bits_per_byte": "bytes"}
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HF backend default when a task sets no max_gen_toks


def require_lm_eval():
    """The imported `lm_eval` package, or a ConfigError telling the user how to install it."""
    try:
        import lm_eval
        import lm_eval.tasks  # noqa: F401  (TaskManager, the task machinery)
    except ImportError as e:
        raise ConfigError(f"lm-eval tasks need lm-evaluation-harness ({e}): pip install 'retain[lm-eval]'") from None
    return lm_eval


def looks_like_lm_eval_yaml(data: dict) -> bool:
    """True for an lm-eval task or group YAML (`task:` plus lm-eval keys), False for retain's own task/suite."""
    if not isinstance(data, dict) or "kind" in data or "tasks" in data:
        return False
    return ("task" in data or "group" in data) and bool(LM_EVAL_KEYS & data.keys())


class _AnyTagLoader(yaml.SafeLoader):
    """A safe loader that reads unknown tags (lm-eval's `!function`) as plain values, to sniff a file's format."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                                    if isinstance(node, yaml.ScalarNode) else None)


def looks_like_lm_eval_file(path: str | Path) -> bool:
    """looks_like_lm_eval_yaml for a file that yaml.safe_load may refuse (lm-eval YAMLs use `!function`)."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_AnyTagLoader)  # noqa: S506 (safe subclass)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return looks_like_lm_eval_yaml(data)


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None, include_defaults: bool):
    """lm-eval's TaskManager; indexing its own task tree takes seconds, so one per process and path."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def load_lm_eval_tasks(spec: str | Path) -> list[LmEvalTask]:
    """The lm-eval tasks of `spec`: a task or group YAML path, or "lm-eval:NAME" (a group or tag: its subtasks).

    Builds each task with lm-eval (which reads its dataset), so a missing dataset or an unsupported
    setting is a ConfigError here, before any model is loaded.
    """
    require_lm_eval()
    spec = str(spec)
    if spec.startswith(REGISTRY_PREFIX):
        return _load_registered(spec[len(REGISTRY_PREFIX):].strip())
    return _load_file(Path(spec))


def _load_file(path: Path) -> list[LmEvalTask]:
    from lm_eval.tasks._yaml_loader import load_yaml

    if not path.is_file():
        raise ConfigError(f"{path}: not found")
    try:
        raw = load_yaml(path, resolve_func=False)  # includes merged, relative to each including file
    except Exception as e:  # lm-eval raises plain ValueError/OSError/YAMLError for bad files
        raise ConfigError(f"{path}: {e}") from None
    _check_output_type(raw, str(path))
    if "group" in raw:
        # Its tasks are names, which an index resolves: the YAML's folder's, plus lm-eval's (seconds to build)
        # when they are not all there. By name: lm-eval 0.4.13 takes a group file's task list for its name.
        manager = _task_manager(str(path.parent), False)
        if not _all_indexed(raw["task"], manager.task_index):
            manager = _task_manager(str(path.parent), True)
        loaded = _build(manager, raw["group"], str(path))
    else:
        loaded = _build(_task_manager(None, False), str(path), str(path))  # a task YAML needs no index
    tags = {name: _first(raw.get("tag")) for name in loaded["tasks"]}
    return _wrap(loaded, tags, str(path))


def _all_indexed(members: list, index: dict) -> bool:
    """Whether a group's `task:` members (names, or dicts naming a task or group), and theirs, are in `index`."""
    for member in members if isinstance(members, list) else [members]:
        name = member.get("task") or member.get("group") if isinstance(member, dict) else member
        entry = index.get(name)
        if entry is None or (entry.cfg and "group" in entry.cfg and not _all_indexed(entry.cfg.get("task"), index)):
            return False
    return True


def _load_registered(name: str) -> list[LmEvalTask]:
    from lm_eval.tasks._index import Kind

    manager = _task_manager(None, True)
    entry = manager.task_index.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, manager.all_tasks, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{REGISTRY_PREFIX}{name}: not a task, group or tag in lm-eval's registry{hint}")
    if entry.cfg is not None:
        _check_output_type(entry.cfg, str(entry.yaml_path))
    loaded = _build(manager, name, f"{REGISTRY_PREFIX}{name} ({entry.yaml_path or 'lm-eval'})")
    if entry.kind is Kind.TAG:  # tasks asked for by their tag show under it
        tags = dict.fromkeys(loaded["tasks"], name)
    else:
        tags = {t: _first((manager.task_index[t].cfg or {}).get("tag")) if t in manager.task_index else None
                for t in loaded["tasks"]}
    return _wrap(loaded, tags, f"{REGISTRY_PREFIX}{name}")


def _build(manager, spec: str, where: str) -> dict:
    """manager.load(spec) ({"tasks", "groups", "group_map"}), lm-eval's errors (a dataset it cannot read) named."""
    try:
        return manager.load(spec)
    except Exception as e:  # datasets and lm-eval raise OSError, ValueError, KeyError...: the message is the help
        raise ConfigError(f"{where}: lm-eval could not build the task: {type(e).__name__}: {e}. If it is the "
                          "dataset: offline, a task's dataset must be local or in the Hugging Face datasets cache; "
                          "a YAML can `include:` the task and set dataset_path: json, "
                          "dataset_kwargs: {data_files: ...}") from None


def _wrap(loaded: dict, tags: dict[str, str | None], where: str) -> list[LmEvalTask]:
    """LmEvalTask per leaf task; its capability is its innermost group, else its tag, else its name."""
    parent = {child: group for group, children in loaded.get("group_map", {}).items() for child in children}
    tasks = []
    for name, task in loaded["tasks"].items():
        source = _source(task, where)
        _check_supported(task, source)
        tasks.append(LmEvalTask(task, parent.get(name) or tags.get(name) or name, source))
        # every group above it (lm-eval's Group objects), whose scores lm_eval_group_scores computes as lm-eval does
        tasks[-1].lm_eval_groups = tuple(g for g in loaded.get("groups", {}).values()
                                         if name in {t.task_name for t in g.get_all_tasks()})
    return tasks


def _first(tag) -> str | None:
    return tag[0] if isinstance(tag, list) and tag else tag if isinstance(tag, str) else None


def _source(task, where: str) -> str:
    """The YAML a task came from (lm-eval records it in metadata), for error messages."""
    metadata = getattr(task.config, "metadata", None) or {}
    source = metadata.get("config_source") if isinstance(metadata, dict) else None
    return source if source and source != "inline" else where


def _check_output_type(raw: dict, source: str) -> None:
    output_type = raw.get("output_type", "generate_until")  # lm-eval's default
    if "group" not in raw and "class" not in raw and output_type not in KIND:
        raise ConfigError(f"{source}: output_type: {output_type!r} is not one retain can run "
                          f"({', '.join(KIND)})")


def _check_supported(task, source: str) -> None:
    """ConfigError naming the file and key for what retain's LM cannot do as lm-eval's HF backend would."""
    config = task.config
    if task.OUTPUT_TYPE not in KIND:
        raise ConfigError(f"{source}: output_type: {task.OUTPUT_TYPE!r} is not one retain can run ({', '.join(KIND)})")
    for key in ("doc_to_image", "doc_to_audio"):
        if getattr(config, key, None):
            raise ConfigError(f"{source}: {key}: multimodal tasks are not supported (retain scores text-only LMs)")
    if getattr(config, "unsafe_code", False):
        raise ConfigError(f"{source}: unsafe_code: retain does not run tasks that execute model-written code")
    if task.OUTPUT_TYPE == "generate_until":
        _generation_settings(config.generation_kwargs or {}, source)


def _generation_settings(generation_kwargs: dict, source: str) -> tuple[tuple[str, ...], int]:
    """(stop strings, max new tokens) of lm-eval's generation_kwargs; ConfigError for anything but greedy."""
    from lm_eval.models.utils import normalize_gen_kwargs

    kwargs = normalize_gen_kwargs(generation_kwargs, DEFAULT_MAX_GEN_TOKS)  # lm-eval's reading of the aliases
    if kwargs["do_sample"]:
        raise ConfigError(f"{source}: generation_kwargs.do_sample: retain runs lm-eval tasks greedily "
                          "(sampled generation is not supported)")
    for key in sorted(kwargs.keys() - GENERATION_KEYS):
        if key in NO_OP_VALUES and kwargs[key] == NO_OP_VALUES[key]:
            continue
        raise ConfigError(f"{source}: generation_kwargs.{key}: not supported (retain generates greedily with "
                          "until and max_gen_toks only)")
    return tuple(kwargs["until"]), int(kwargs["max_gen_toks"])


class LmEvalTask:
    """One lm-eval task (lm-eval's Task object inside), scored with retain's LM; see the module docstring."""

    def __init__(self, task, group: str, source: str):
        from lm_eval.defaults import DEFAULT_OTHER_SEED

        self._task = task
        self._dev_task = None
        self._fewshot_seed = DEFAULT_OTHER_SEED  # what lm_eval.simple_evaluate uses unless told otherwise
        if task.get_config("num_fewshot") is None:
            task.set_config("num_fewshot", 0)  # as lm-eval's evaluator does
        self.name: str = task.task_name
        self.lm_eval_groups: tuple = ()  # lm-eval's Group objects this task is in (set by _wrap)
        self.source = source
        self.kind: str = KIND[task.OUTPUT_TYPE]
        self.group = group
        self.description: str = (task.get_config("task_alias") or task.get_config("description") or "").strip()
        self.primary_metric = self._pairable_metric()
        higher_is_better = task.higher_is_better()
        metric = self.primary_metric.split(",")[0]
        self.lower_is_better = not higher_is_better[metric] if metric in higher_is_better else self.kind == "perplexity"

    def _filter_names(self) -> list[str]:
        filters = self._task.get_config("filter_list")
        return [f["name"] for f in filters] if isinstance(filters, list) and filters else ["none"]

    def _metric_key(self, metric: str, filter_name: str) -> str:
        """lm-eval's result key "metric,filter", without lm-eval's default filter name "none"."""
        return metric if filter_name == "none" else f"{metric},{filter_name}"

    def _pairable_metric(self) -> str:
        """The first metric of metric_list the report can pair per document: a mean over documents, or a
        word/byte perplexity (bits_per_byte and corpus-level metrics such as f1 have no per-document value)."""
        from lm_eval.api.metrics import mean

        for metric, aggregate in self._task.aggregation().items():
            if aggregate is mean or (self.kind == "perplexity" and metric in PAIRED_PERPLEXITIES):
                return self._metric_key(metric, self._filter_names()[0])
        if self.kind == "perplexity":
            return "byte_perplexity"  # bits_per_byte alone: the same ranking, with a per-document denominator
        raise ConfigError(f"{self.source}: metric_list: no metric retain can compare per document "
                          f"({', '.join(self._task.aggregation())}); add one averaged over documents, e.g. acc")

    @functools.cached_property
    def chance(self) -> float | None:
        """1 / number of choices when every test document has the same number, else None."""
        if self.kind != "multiple_choice":
            return None
        counts = {len(self._task.doc_to_choice(doc)) for doc in self._task.eval_docs}
        return 1.0 / counts.pop() if len(counts) == 1 else None

    def _split_task(self, split: str):
        """lm-eval's Task whose evaluation documents are `split`'s ("dev": the task re-built on validation)."""
        config = self._task.config
        if split == "test":
            task = self._task
        elif split == "dev":
            if config.test_split is None or config.validation_split is None:
                raise ConfigError(f"{self.source}: validation_split: task {self.name} has no dev split "
                                  "(lm-eval evaluates its validation split as the test split, or it has none)")
            task = self._dev_task = self._dev_task or _rebuilt(self._task, test_split=config.validation_split,
                                                                source=self.source)
        else:
            raise ConfigError(f"task {self.name}: split {split!r}: expected 'test' or 'dev'")
        if len(task.eval_docs) == 0:
            raise ConfigError(f"{self.source}: task {self.name}: its {split} split has no documents")
        return task

    def check(self, split: str) -> None:
        """ConfigError if `split` ("test" or "dev") has no documents; cheap, meant for before the model loads."""
        self._split_task(split)

    def score(self, lm, split: str = "test", limit: int | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
        """(aggregate metrics {name: float}, per-document records [{"id": doc index, metric: value, ...}]).

        `lm` is a retain.evaluation.lm.LM; `limit` scores the first N documents (lm-eval's --limit).
        `seed` is unused: lm-eval tasks run greedily and their few-shot seed is lm-eval's default.
        """
        task = self._split_task(split)
        task.set_fewshot_seed(seed=self._fewshot_seed)  # fresh each call: the same prompts every time
        task.build_all_requests(limit=limit)
        tokens = _answer_requests(lm, task.instances)
        task.apply_filters()
        return self._collect(task, limit, tokens)

    def _collect(self, task, limit: int | None, tokens: dict[int, int]) -> tuple[dict, list[dict]]:
        """process_results per document and filter, then the task's own aggregation of each metric."""
        from lm_eval.api.metrics import mean

        by_doc = defaultdict(list)
        for instance in task.instances:
            by_doc[instance.doc_id].append(instance)
        values = defaultdict(list)  # (metric, key) -> per-document values, as lm-eval's aggregations take them
        records = []
        for doc_id, doc in task.doc_iterator(limit=limit):
            instances = sorted(by_doc[doc_id], key=lambda i: i.idx)
            record, first = {"id": doc_id}, None
            for filter_name in self._filter_names():
                results = task.process_results(doc, [i.filtered_resps[filter_name] for i in instances])
                first = results if first is None else first
                for metric, value in results.items():
                    key = self._metric_key(metric, filter_name)
                    values[metric, key].append(value)
                    if _is_number(value) and task.aggregation().get(metric, mean) is mean:
                        record[key] = float(value)  # a value the report can average and pair
            record.update(self._kind_fields(instances, first, tokens.get(doc_id)))
            records.append(record)
        aggregation = task.aggregation()  # after process_results, which may register metrics it expands
        metrics = {key: float(aggregation.get(metric, mean)(vals)) for (metric, key), vals in values.items()}
        return metrics, records

    def _kind_fields(self, instances: list, results: dict, n_tokens: int | None) -> dict:
        """The per-document fields retain's report and readers use beyond the metrics' values."""
        if self.kind == "multiple_choice":
            return {"loglikelihoods": [float(i.resps[0][0]) for i in instances]}
        if self.kind == "perplexity":
            record = perplexity_item(float(instances[0].resps[0]), n_tokens, instances[0].args[0])
            # The task's own counts (lm-eval's (loglikelihood, count) pairs) win: wikitext, for one, counts
            # the words of the page before detokenization, so the report's pooled perplexity equals lm-eval's.
            for metric, field in COUNT_FIELDS.items():
                if isinstance(results.get(metric), tuple):
                    record[field] = int(results[metric][1])
            return record
        if self.kind == "loglikelihood":
            return {"loglikelihood": float(instances[0].resps[0][0])}
        return {"prediction": instances[0].resps[0]}  # the raw generation; what the filters kept is in the metrics


def lm_eval_group_scores(tasks: list[LmEvalTask], scored: dict[str, dict]) -> dict[str, dict]:
    """Each aggregating group of `tasks`, scored by lm-eval's own Group.aggregate from retain's per-task results
    (`scored`: the runner's, with "metrics" and "n"); see retain.evaluation.groups for the record's shape."""
    groups = {g.name: g for task in tasks for g in task.lm_eval_groups if g.has_aggregation}
    # lm-eval's per-task results: "metric,filter" keys and the documents scored (what weight_by_size weighs)
    task_metrics = {t.name: {**{_lm_eval_key(k): v for k, v in scored[t.name]["metrics"].items()},
                             "sample_len": scored[t.name]["n"]} for t in tasks if t.name in scored}
    out = {}
    for name, group in groups.items():
        aggregated = group.aggregate(task_metrics)
        metrics = {_metric_name(k): float(v) for k, v in aggregated.items() if "," in k and "_stderr" not in k}
        if not metrics:
            continue
        weighting = {cfg.metric: bool(cfg.weight_by_size) for cfg in group.aggregate_metric_list}
        leaves = [t.task_name for t in group.get_all_tasks() if t.task_name in task_metrics]
        out[name] = {"metrics": metrics,
                     "weight_by_size": {m: weighting[m.split(",")[0]] for m in metrics},
                     "subtasks": {t: {"n": scored[t]["n"], **{m: scored[t]["metrics"][m] for m in metrics
                                                             if m in scored[t]["metrics"]}} for t in leaves}}
    return out


def _lm_eval_key(key: str) -> str:
    """lm-eval's result key of a metric retain records ("acc" -> "acc,none"; "exact_match,strict-match" as is)."""
    return key if "," in key else f"{key},none"


def _metric_name(key: str) -> str:
    """retain's name of an lm-eval result key: without lm-eval's default filter name ("acc,none" -> "acc")."""
    return key.removesuffix(",none")


def _rebuilt(task, source: str, **overrides):
    """A new lm-eval ConfigurableTask from `task`'s config with `overrides` (e.g. another test_split)."""
    from lm_eval.api.task import ConfigurableTask

    if type(task) is not ConfigurableTask:
        raise ConfigError(f"{source}: class: a Python-defined lm-eval task has only its test split here")
    # The config's fields as they are (functions and the parsed few-shot config kept, not re-read).
    config = {f.name: getattr(task.config, f.name) for f in dataclasses.fields(task.config)}
    try:
        return ConfigurableTask(config={**config, **overrides})
    except Exception as e:  # e.g. the data has no such split: datasets raises KeyError/ValueError
        changed = ", ".join(f"{key}={value!r}" for key, value in overrides.items())
        raise ConfigError(f"{source}: lm-eval could not build the task with {changed}: "
                          f"{type(e).__name__}: {e}") from None


def _answer_requests(lm, instances: list) -> dict[int, int]:
    """Answer every lm-eval Instance with retain's LM, in lm-eval's response format (appended to .resps).

    Returns the token count per document of rolling-loglikelihood requests (lm-eval's response holds only
    the loglikelihood; the report's token perplexity needs the count).
    """
    by_type = defaultdict(list)
    for instance in instances:
        by_type[instance.request_type].append(instance)
    tokens = {}
    for request_type, group in by_type.items():
        if request_type == "loglikelihood":
            responses = [tuple(r) for r in lm.loglikelihood([i.args[:2] for i in group])]
        elif request_type == "loglikelihood_rolling":
            scored = lm.loglikelihood_rolling([i.args[0] for i in group])
            responses = [ll for ll, _ in scored]
            tokens.update((i.doc_id, n) for i, (_, n) in zip(group, scored))
        elif request_type == "generate_until":
            settings = [_generation_settings(i.args[1], i.task_name) for i in group]
            responses = lm.generate_until([(i.args[0], until, n) for i, (until, n) in zip(group, settings)])
        else:
            raise ConfigError(f"task {group[0].task_name}: request type {request_type!r} is not supported")
        for instance, response in zip(group, responses, strict=True):
            # lm-eval sends a request `repeats` times; retain's scoring is deterministic, so the answers agree.
            instance.resps.extend([response] * instance.repeats)
    return tokens


def _is_number(value) -> bool:
    """A per-document value the report can average (lm-eval gives tuples for corpus-level metrics like f1)."""
    return isinstance(value, (numbers.Real, np.bool_))

"""A Hugging Face model card for a finished run: what it was fine-tuned from and on, and what it forgot.

    write_card(run_dir, base_results, tuned_results, out=None) -> Path    README.md, ready to upload
    push_card(folder, repo) -> str                                       upload the folder (huggingface_hub)

The card is README.md with YAML front matter (base model, datasets, library, and a `model-index` of
eval results: each capability's primary metric for the base model and for the fine-tune, on the
same items), then the forgetting verdict, the per-capability table with paired 95% CIs, and the
run's config. The metadata is built with huggingface_hub's ModelCardData / EvalResult, so the hub
reads it as it reads any card. By default it is written into the run's final/ (the model or adapter
that gets uploaded).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants

from retain.core.errors import ConfigError, UserError
from retain.evaluation.results import check_comparable, load_results
from retain.core.files import atomic_write_text
from retain.model.loading import is_adapter_dir, is_gguf_path, looks_like_path
from retain.core.paths import MODEL_ALIASES
from retain.report.build import compare, headline
from retain.report.render import LEGEND, _table_rows
from retain.core.paths import CONFIG_FILE

TUNED, BASE = "fine-tuned", "base model"  # how the model-index names the two values of one metric


def hub_model_id(model: dict) -> str | None:
    """The base model's hub id, when it has one: an id the run loaded, or the upstream id of an alias."""
    name = model.get("name", "")
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name].hub_id
    if is_gguf_path(name) or looks_like_path(name) or Path(name).expanduser().exists():
        return None
    return name or None


def hub_datasets(data: dict) -> list[str]:
    """The hub datasets (hub:ORG/NAME[:SPLIT]) among data.train and data.dev; local files have no hub id."""
    found = []
    for key in ("train", "dev"):
        source = data.get(key) or ""
        if source.startswith("hub:"):
            found.append(source[len("hub:"):].split(":")[0])
    return list(dict.fromkeys(found))


def data_sources(data: dict) -> list[str]:
    """data.train and data.dev in words for the card's body, local files too (which the front matter's `datasets`,
    hub ids only, cannot hold), by file name: a card leaves no local paths."""
    out = []
    for key, what in (("train", "trained on"), ("dev", "dev split")):
        source = data.get(key) or ""
        if source.startswith("hub:"):
            out.append(f"{what} the hub dataset `{source[len('hub:'):]}`")
        elif source.startswith("lab:"):
            out.append(f"{what} `{source}` (bundled with retain)")
        elif source:
            out.append(f"{what} `{Path(source).name}` (a local file, not on the hub)")
    return out


def replaceable(card: Path) -> bool:
    """Whether an existing README.md may be replaced without --force: only the unfilled template PEFT saves beside
    an adapter (huggingface_hub's default card, "Model Card for Model ID"), which the training wrote, not a user."""
    try:
        return ModelCard.load(card).text.lstrip().startswith("# Model Card for Model ID")
    except (OSError, ValueError, yaml.YAMLError):  # not a card huggingface_hub reads: someone's own file
        return False


def eval_results(comparison: dict, split: str | None):
    """Two EvalResults per capability (its primary metric for the base model and for the fine-tune)."""
    results = []
    for capability, row in comparison["capabilities"].items():
        for who, value in ((TUNED, row["after"]), (BASE, row["before"])):
            results.append(EvalResult(task_type="text-generation", dataset_type=capability, dataset_name=capability,
                                      dataset_split=split, metric_type=row["metric"], metric_value=round(value, 6),
                                      metric_name=f"{row['metric']} ({who})"))
    return results


def card_text(run_dir: Path, config: dict, base: dict, tuned: dict, model_name: str) -> str:
    """README.md of the card: YAML front matter, then the forgetting verdict, table and the run's config."""
    comparison = compare(base, tuned)
    adapter = is_adapter_dir(run_dir / "final")
    base_id = hub_model_id(config.get("model", {}))
    data = ModelCardData(model_name=model_name, base_model=base_id, datasets=hub_datasets(config.get("data", {})) or None,
                         library_name="peft" if adapter else "transformers", pipeline_tag="text-generation",
                         tags=["retain", "forgetting-report"], eval_results=eval_results(comparison, base.get("split")))
    grade = comparison["forgetting"]
    verdict = "no significant forgetting" if grade["severity"] == "none" else \
        f"{grade['severity']} forgetting (worst: {grade['worst']})"
    header, rows = _table_rows(comparison["capabilities"], "capability")
    training = config.get("training", {})
    mitigations = ", ".join(config.get("mitigations", {})) or "none (full fine-tuning)"
    base_text = base_id or Path(config.get("model", {}).get("name", "?")).name  # no local paths in the prose
    train = config.get("data", {}).get("train", "?")
    load = (f" This repository holds a PEFT adapter: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
            f"\"{base_text}\"), REPO)`." if adapter else "")
    lines = [
        f"# {model_name}", "",
        f"A fine-tune of `{base_text}` on `{train if train.startswith(('hub:', 'lab:')) else Path(train).name}`, made and "
        f"measured with retain (fine-tuning without forgetting).{load}", "",
        "Data: " + "; ".join(data_sources(config.get("data", {})) or ["not recorded"]) + ".", "",
        "## Forgetting", "",
        f"**Verdict: {verdict}.**", "",
        headline(TUNED, comparison), "",
        f"Base model and fine-tune scored on the same {base.get('split')} items of the suite "
        f"`{base.get('suite')}`" + (f" (first {base['limit']} items per task)" if base.get("limit") else "") + ".", "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows), "",
        LEGEND, "",
        "## Training", "",
        f"Mitigations: {mitigations}; learning rate {training.get('lr', '?')}, "
        + (f"{training['max_steps']} steps" if training.get("max_steps") else f"{training.get('epochs', 1)} epochs")
        + ". The run's config:", "",
        "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def write_card(run_dir: Path, base_results: Path, tuned_results: Path, out: Path | None = None,
               model_name: str | None = None, force: bool = False) -> Path:
    """Write the card of the run in `run_dir` (default: RUN_DIR/final/README.md); return its path.

    `base_results` and `tuned_results` are `retain eval --out` files of the base model and of final/,
    scored on the same items (as `retain report` requires). An existing file there is replaced only with `force`
    (or when it is PEFT's unfilled template, see `replaceable`); else UserError (exit 2).
    """
    run_dir = Path(run_dir)
    config_path, final = run_dir / CONFIG_FILE, run_dir / "final"
    if not config_path.is_file() or not final.is_dir():
        raise ConfigError(f"{run_dir}: not a finished run (no {CONFIG_FILE} or no final/) — give the output.dir of "
                          "a run that `retain train` completed")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    paths = [Path(base_results), Path(tuned_results)]
    results = [load_results(p) for p in paths]
    check_comparable(paths, results)
    out = Path(out) if out is not None else final / "README.md"
    if out.exists() and not force and not replaceable(out):
        raise UserError(f"{out}: already exists and is not a card this command may replace — give --out NEW_PATH, "
                        "or --force to overwrite it")
    atomic_write_text(out, card_text(run_dir, config, *results, model_name or run_dir.resolve().name))
    return out


def push_card(folder: Path, repo: str) -> str:
    """Upload `folder` (the model or adapter, with its README.md) to the hub repo `repo`; return its URL."""
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise UserError(f"--push {repo}: HF_HUB_OFFLINE is set, so nothing can be uploaded — the card is written; "
                        f"upload {folder} where there is network (unset HF_HUB_OFFLINE, hf auth login)")
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Upload model and card (retain card)")
    return f"https://huggingface.co/{repo}"

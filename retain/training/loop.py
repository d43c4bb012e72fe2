"""The training loop: one function, read top to bottom.

    train(config, resume=False, overwrite=False, allow_config_change=False) -> RunResult

    lock the output dir (another live run holds it: stop at once)
    plan: fresh, overwrite or resume; refuse to clobber a run, to resume a finished one, or to
          resume under a changed config (retain.training.rundir) — reads only
    set seed; load tokenizer, model
    1. model transforms (mitigations, table order: freezing, PEFT)
    tokenize task data
    2. data transforms (replay mixing)
    build optimizer, scheduler, seeded dataloader; accelerator.prepare(...)
    3. setup (anchors, Fisher, base retention scores) — on the prepared model
    — every user error has surfaced by now: only now may an old run's outputs be deleted —
    resume: load the newest checkpoint (weights, optimizer, RNG, mitigation state), skip the
            batches it had consumed; an allowed config change applies its lr and schedule from here
    write config.yaml and the mitigations' files (main process only)
    for each optimizer step:
        take the step's micro-batches; count their target tokens (all processes)
        for each micro-batch: forward; loss = task loss + Σ named loss terms (4a),
                              weighted by target tokens (retain.training.step); backward
        4b. gradient filters (progressive unfreezing)
        clip; stop if the loss or gradient norm is not finite, before the optimizer steps on it
        optimizer.step, scheduler.step, zero_grad
        log (every term by name), eval on dev
        4c. monitors (retention budget): may stop, with other weights (restored strictly)
        checkpoint, if the weights are finite
    5. weight transforms (interpolation, merging)
    save final/ (full model, or adapter [+ merged/]) and tokenizer, if the weights are finite

Gradient accumulation is exact: the step's loss is the mean over all its target tokens, across
micro-batches and processes, so batch 8 × accumulation 1 equals 4 × 2. Per-token loss terms (KL)
are weighted the same way; penalties on the weights alone (L2-SP, EWC, SI) count once per step.
The host syncs once per step (the finiteness check) and reads loss values only at log steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from retain.config import RunConfig, config_to_yaml, resolve_path
from retain.configs import ConfigError
from retain.data import MODEL_INPUTS, Dataset, SeededOrder, collate, load_dataset
from retain.io import atomic_torch_save, atomic_write_json, atomic_write_text
from retain.mitigations import MITIGATIONS, build_mitigations
from retain.mitigations.penalties import restore
from retain.mitigations.roles import (Context, DataTransform, GradientFilter, LossTerm, ModelTransform, Monitor, Setup,
                                     Stateful, WeightTransform, WritesFiles)
from retain.modeling import load_model, load_tokenizer
from retain.training.checkpoint import (NonFiniteError, any_failed, check_finite, disk_full, last_good,
                                        load_checkpoint, save_checkpoint)
from retain.training.logging import MetricsLog
from retain.training.rundir import Start, clear_outputs, plan_start, run_lock
from retain.training.step import accumulate_gradients

NonFiniteLossError = NonFiniteError  # the name earlier releases raised


@dataclass
class RunResult:
    output_dir: Path
    final_dir: Path
    metrics_path: Path
    steps: int
    metrics: list[dict] = field(default_factory=list)


def total_steps_for(config: RunConfig, n_examples: int, world_size: int) -> int:
    t = config.training
    if t.max_steps is not None:
        return t.max_steps
    per_step = t.batch_size * t.grad_accum * world_size
    return max(1, math.ceil(t.epochs * n_examples / per_step))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; matrices decay, biases and norm scales don't (decaying those only hurts)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("mitigations: no trainable parameters left (the mitigations froze everything) — "
                          "unfreeze something or drop a mitigation")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA, float parameters) is what HF Trainer uses by default, and faster.
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)


def make_accelerator(config: RunConfig):
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if config.training.bf16 else "no",
                       gradient_accumulation_steps=config.training.grad_accum)


@torch.no_grad()
def dev_loss(model, dataloader, accelerator) -> float:
    """Token-weighted mean loss over the whole dev set, summed across processes."""
    model.eval()
    total = torch.zeros(2)
    for batch in dataloader:
        out = model(**{k: batch[k] for k in MODEL_INPUTS})
        n_tokens = (batch["labels"][:, 1:] != -100).sum()
        total += torch.stack([out.loss.float().cpu() * n_tokens.cpu(), n_tokens.cpu().float()])
    model.train()
    total = accelerator.reduce(total.to(accelerator.device), "sum").cpu()
    return (total[0] / total[1].clamp(min=1)).item()


def train(config: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          allow_config_change: bool = False) -> RunResult:
    """Run the whole fine-tune of `config`; with `resume`, continue from the newest checkpoint.

    A fresh run refuses an output directory that already holds a run (nothing is lost by
    accident); `overwrite` replaces it, but only once the new run's data, model and mitigations
    have loaded. `resume` refuses a finished run, and a config that differs from the
    checkpoint's unless `allow_config_change` (then the new values apply from the resumed step).
    The output directory is locked for the run's duration.
    """
    out = Path(config.output.dir)
    accelerator = make_accelerator(config)
    with run_lock(out, accelerator):
        return _train_locked(config, out, accelerator, resume, overwrite, progress, allow_config_change)


def _train_locked(config: RunConfig, out: Path, accelerator, resume: bool, overwrite: bool, progress: bool,
                  allow_config_change: bool) -> RunResult:
    """train() for a process group holding the output dir's lock."""
    from accelerate.utils import set_seed
    from tqdm import tqdm
    from transformers import get_scheduler

    # --- Load and check everything; nothing in the output dir changes until all of it has worked ---
    t = config.training
    start = plan_start(out, config, resume, overwrite, allow_config_change)  # reads only
    if start.note:
        accelerator.print(start.note)
    set_seed(t.seed)

    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    mitigations = build_mitigations(config.mitigations)
    names = [name for name in MITIGATIONS if name in config.mitigations]  # build_mitigations' order

    def load(path):
        return load_dataset(resolve_path(path), tokenizer, config.data.format, config.data.max_length,
                            config.data.loss_on, config.data.chat)

    train_set = load(config.data.train)
    dev_set = load(config.data.dev) if config.data.dev else None
    total_steps = total_steps_for(config, len(train_set), accelerator.num_processes)
    if start.checkpoint is not None and start.step >= total_steps:
        raise ConfigError(f"--resume: {start.checkpoint} is at step {start.step}, but this config trains "
                          f"{total_steps} steps")
    ctx = Context(config=config, tokenizer=tokenizer, total_steps=total_steps)

    for m in mitigations:  # 1
        if isinstance(m, ModelTransform):
            model = m.transform_model(model, ctx)
    examples = train_set.examples
    for m in mitigations:  # 2
        if isinstance(m, DataTransform):
            examples = m.transform_data(examples, ctx)
    report_data(accelerator, train_set, dev_set, len(examples))
    n = accelerator.num_processes
    per_step = t.batch_size * t.grad_accum * n  # examples per optimizer step, all processes
    accelerator.print(f"{total_steps} optimizer steps on {n} process{'es' if n > 1 else ''}, global batch {per_step}")

    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if t.scheduler == "constant" else t.scheduler,
                              optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=total_steps)
    seen = start.step * per_step if start.examples_seen is None else start.examples_seen
    epochs_needed = math.ceil((seen + (total_steps - start.step) * per_step) / len(examples)) + 1
    pad_id = tokenizer.pad_token_id

    def loader(data, sampler=None):
        # Its own generator: iterating a DataLoader draws a seed, and drawing it from the global
        # RNG would shift dropout after a resume.
        return torch.utils.data.DataLoader(data, batch_size=t.batch_size, sampler=sampler,
                                           collate_fn=lambda b: collate(b, pad_id),
                                           generator=torch.Generator().manual_seed(t.seed))

    train_loader = loader(examples, SeededOrder(len(examples), t.seed, epochs_needed))
    dev_loader = loader(dev_set.examples) if dev_set else None
    # The scheduler is stepped by us once per optimizer step (accelerate's wrapper would step it once
    # per process), and registered so that checkpoints carry it.
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    accelerator.register_for_checkpointing(scheduler)
    if dev_loader is not None:
        dev_loader = accelerator.prepare(dev_loader)

    loss_terms = [m for m in mitigations if isinstance(m, LossTerm)]
    gradient_filters = [m for m in mitigations if isinstance(m, GradientFilter)]
    monitors = [m for m in mitigations if isinstance(m, Monitor)]
    stateful = {name: m for name, m in zip(names, mitigations) if isinstance(m, Stateful)}
    for m in mitigations:  # 3
        if isinstance(m, Setup):
            m.setup(model, ctx)

    # --- Claim the output dir: only now may an earlier run's (or attempt's) outputs go ---
    if start.checkpoint is None and accelerator.is_main_process:
        clear_outputs(out)
    accelerator.wait_for_everyone()
    log = MetricsLog(out, accelerator.is_main_process)
    step = 0
    if start.checkpoint is not None:
        resume_from(start, accelerator, optimizer, scheduler, stateful)
        step = start.step
        log.truncate_after(step)
        # The data order is fixed by the seed: skip the micro-batches the checkpoint had consumed
        # (counted in examples, so that an allowed change of batch size still lands in the right place).
        train_loader = accelerator.skip_first_batches(train_loader, seen // (t.batch_size * n))
        accelerator.print(f"resumed from {start.checkpoint} (step {step})")
    config_yaml = config_to_yaml(config)
    if accelerator.is_main_process:
        atomic_write_text(out / "config.yaml", config_yaml)
    write_files(accelerator, out, mitigations)

    # --- Train ---
    batches = iter(train_loader)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))
    window_tokens = torch.zeros((), device=accelerator.device)
    window_start, window_first_step = time.perf_counter(), step
    while step < total_steps:
        # All of the step's micro-batches first: their target tokens weight each one's loss.
        micro_batches = [next(batches) for _ in range(t.grad_accum)]
        shares = accumulate_gradients(model, micro_batches, loss_terms, accelerator)  # 4a
        terms = accelerator.reduce(torch.stack(list(shares.values())), "sum")  # (n_terms,) this step's values
        window_tokens += sum(b["attention_mask"].sum() for b in micro_batches).to(accelerator.device)
        for m in gradient_filters:  # 4b
            m.filter_gradients(model, step)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)
        # The step's one host sync: a non-finite loss or gradient must never reach the weights.
        if not torch.isfinite(torch.cat([terms, grad_norm.reshape(1).to(terms)])).all():
            values = dict(zip(shares, terms.tolist()))
            raise NonFiniteError(
                f"loss became {sum(values.values())} (terms: {values}, gradient norm {grad_norm.item()}) at step "
                f"{step + 1}; stopped before the optimizer step, nothing saved. {last_good(out)} "
                "Try a lower training.lr or set max_grad_norm.")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen += per_step
        bar.update(1)

        if step % t.log_every == 0 or step == total_steps:
            values = dict(zip(shares, terms.tolist()))
            elapsed = time.perf_counter() - window_start
            tokens = accelerator.reduce(window_tokens, "sum").item()
            row = {"step": step, "loss": sum(values.values()), **{f"loss/{k}": v for k, v in values.items()},
                   "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm.item(),
                   "tokens_per_s": tokens / max(elapsed, 1e-9), "step_time_s": elapsed / (step - window_first_step)}
            log.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            window_tokens = torch.zeros((), device=accelerator.device)
            window_start, window_first_step = time.perf_counter(), step
        if dev_loader is not None and ((t.eval_every and step % t.eval_every == 0) or step == total_steps):
            log.write({"step": step, "eval/loss": dev_loss(model, dev_loader, accelerator)})
        decided = [(m, d) for m in monitors if (d := m.check(model, step, step == total_steps)) is not None]  # 4c
        for _, d in decided:
            if d.metrics:
                log.write({"step": step, **d.metrics})
        write_files(accelerator, out, [m for m, _ in decided])
        stop = next((d for _, d in decided if d.stop), None)
        if stop is not None:
            if stop.weights is not None:
                restore(accelerator.unwrap_model(model), stop.weights)
            accelerator.print(stop.reason)
            break
        if t.save_every and step % t.save_every == 0 and step < total_steps:
            check_finite(accelerator, accelerator.unwrap_model(model), optimizer, out, f"after step {step}")
            role_states = {name: m.state_dict() for name, m in stateful.items()} if accelerator.is_main_process else {}
            save_checkpoint(accelerator, out, step, t.keep_last, {"total_steps": total_steps, "examples_seen": seen},
                            config_yaml, role_states)
        if window_first_step == step:  # just logged: eval and checkpoint time is not training time
            window_start = time.perf_counter()
    bar.close()

    # --- Finish: the weights the run leaves behind ---
    model = accelerator.unwrap_model(model)
    for m in mitigations:  # 5
        if isinstance(m, WeightTransform):
            model = m.transform_weights(model, ctx)
    final_dir = out / "final"
    check_finite(accelerator, model, None, out, f"the final weights (step {step})")
    error = None
    if accelerator.is_main_process:
        try:
            save_final(model, tokenizer, config, final_dir)
        except OSError as e:  # atomic_directory has removed the partial final/
            error = disk_full(e, str(final_dir), out)
    any_failed(accelerator, error, "writing final/")
    log.close()
    return RunResult(out, final_dir, log.path, step, log.rows)


def resume_from(start: Start, accelerator, optimizer, scheduler, stateful: dict) -> None:
    """Load `start.checkpoint` into the prepared objects and the stateful mitigations."""
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    _, role_states = load_checkpoint(accelerator, start.checkpoint)
    # A mitigation's state is the run's history (the checks so far, the anchors measured at the start):
    # it is kept across an allowed config change, whose new options apply from here on.
    for name, m in stateful.items():
        if name not in role_states:
            accelerator.print(f"mitigations.{name}: {start.checkpoint} holds no state for it; it starts afresh")
            continue
        try:
            m.load_state_dict(role_states[name])
        except ValueError as e:
            if not start.config_changes:
                raise
            accelerator.print(f"mitigations.{name}: {e}; after the config change it starts afresh")
    if start.config_changes:  # allowed: the checkpoint restored the old hyperparameters, the new ones apply
        apply_hyperparameters(optimizer, scheduler, fresh_groups)


def apply_hyperparameters(optimizer, scheduler, groups: list[dict]) -> None:
    """Put this config's optimizer hyperparameters (lr, weight decay, ...) and schedule back after a
    checkpoint load restored the old ones, at the scheduler's current step."""
    for group, fresh in zip(optimizer.param_groups, groups):
        group.update(fresh)
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    # LambdaLR: the lr at a step is the base lr times this config's schedule (warmup, total steps) there
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def write_files(accelerator, out: Path, roles: list) -> None:
    """The files mitigations leave in the output dir; only the main process writes."""
    if not accelerator.is_main_process:
        return
    for m in roles:
        if isinstance(m, WritesFiles):
            for name, content in m.files().items():
                (atomic_write_json if name.endswith(".json") else atomic_torch_save)(out / name, content)


def report_data(accelerator, train_set: Dataset, dev_set: Dataset | None, n_after_transforms: int) -> None:
    for name, ds in (("train", train_set), ("dev", dev_set)):
        if ds is not None:
            accelerator.print(f"{name}: {len(ds)} examples from {ds.path}"
                              f" ({ds.truncated} truncated at max_length, {ds.dropped} dropped: no target left)")
    if n_after_transforms != len(train_set):
        accelerator.print(f"train after data mitigations: {n_after_transforms} examples")


def save_final(model, tokenizer, config: RunConfig, final_dir: Path) -> None:
    """final/: the full model, or the adapter (whose base is the directory or hub id the run loaded)."""
    from peft import PeftModel

    from retain.io import atomic_directory
    from retain.modeling import model_source

    with atomic_directory(final_dir) as tmp:
        if isinstance(model, PeftModel):
            # peft reloads the base from this name: it cannot resolve retain's aliases or GGUF files,
            # and a relative directory would only be found from the same working directory
            base = model_source(config.model)
            base = str(Path(base).resolve()) if Path(base).is_dir() else base
            for peft_config in model.peft_config.values():
                peft_config.base_model_name_or_path = base
            model.save_pretrained(tmp, safe_serialization=True)
            if config.output.merged_export:
                merged = model.merge_and_unload()
                merged.save_pretrained(tmp / "merged", safe_serialization=True)
                tokenizer.save_pretrained(tmp / "merged")
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

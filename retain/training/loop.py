"""The training loop: one function, read top to bottom.

    train(config, resume=False) -> RunResult

    set seed; load tokenizer, model
    1. model transforms (mitigations, table order: freezing, PEFT)
    tokenize task data (errors stop here, before any step)
    2. data transforms (replay mixing)
    build optimizer, scheduler, seeded dataloader; accelerator.prepare(...)
    3. setup (anchors, Fisher, base retention scores) — on the prepared model
    resume: load the newest complete checkpoint, skip the batches it had consumed
    for each optimizer step:
        for each micro-batch: forward; loss = task loss + Σ named loss terms (4a); backward
        4b. gradient filters (progressive unfreezing)
        clip, optimizer.step, scheduler.step, zero_grad
        stop if the loss is not finite (the last good checkpoint stays)
        log (every term by name), eval on dev
        4c. monitors (retention budget): may stop, with other weights
        checkpoint
    5. weight transforms (interpolation, merging)
    save final/ (full model, or adapter [+ merged/]) and tokenizer
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from retain.config import RunConfig, config_to_yaml, resolve_path
from retain.data import MODEL_INPUTS, Dataset, SeededOrder, collate, load_dataset
from retain.io import atomic_write_text
from retain.mitigations import build_mitigations
from retain.mitigations.roles import (Context, DataTransform, GradientFilter, LossTerm, ModelTransform, Monitor, Setup,
                                     WeightTransform)
from retain.modeling import load_model, load_tokenizer
from retain.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from retain.training.logging import MetricsLog


class NonFiniteLossError(RuntimeError):
    pass


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
        raise ValueError("no trainable parameters: the mitigations froze everything")
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


def train(config: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> RunResult:
    """Run the whole fine-tune of `config`; with `resume`, continue from the newest checkpoint.

    A fresh run refuses an output directory that already holds a run (nothing is lost by
    accident); `overwrite` clears it first.
    """
    from accelerate.utils import set_seed
    from tqdm import tqdm
    from transformers import get_scheduler

    t = config.training
    out = Path(config.output.dir)
    accelerator = make_accelerator(config)
    set_seed(t.seed)
    checkpoint = latest_checkpoint(out) if resume else None
    if not resume:
        prepare_fresh_output(out, overwrite, accelerator)
    if resume and checkpoint is None:
        accelerator.print(f"--resume: no complete checkpoint in {out / 'checkpoints'}; starting from step 0")

    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    mitigations = build_mitigations(config.mitigations)

    def load(path):
        return load_dataset(resolve_path(path), tokenizer, config.data.format, config.data.max_length,
                            config.data.loss_on, config.data.chat)

    train_set = load(config.data.train)
    dev_set = load(config.data.dev) if config.data.dev else None
    total_steps = total_steps_for(config, len(train_set), accelerator.num_processes)
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
    accelerator.print(f"{total_steps} optimizer steps on {n} process{'es' if n > 1 else ''}, "
                      f"global batch {t.batch_size * t.grad_accum * n}")

    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if t.scheduler == "constant" else t.scheduler,
                              optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=total_steps)
    micro_batches = total_steps * t.grad_accum
    epochs_needed = math.ceil(micro_batches * t.batch_size * accelerator.num_processes / len(examples)) + 1
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
    for m in mitigations:  # 3
        if isinstance(m, Setup):
            m.setup(model, ctx)

    log = MetricsLog(out, accelerator.is_main_process)
    step = 0
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint[1])
        step = state["step"]
        log.truncate_after(step)
        train_loader = accelerator.skip_first_batches(train_loader, step * t.grad_accum)
        accelerator.print(f"resumed from {checkpoint[1]} (step {step})")
    if accelerator.is_main_process:
        atomic_write_text(out / "config.yaml", config_to_yaml(config))

    batches = iter(train_loader)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))
    window_tokens, window_start, window_first_step = 0, time.perf_counter(), step
    while step < total_steps:
        sums: dict[str, float] = {}
        for _ in range(t.grad_accum):
            batch = next(batches)
            # accumulate(): no gradient all-reduce until the last micro-batch; backward divides by grad_accum
            with accelerator.accumulate(model):
                outputs = model(**{k: batch[k] for k in MODEL_INPUTS})
                terms = {"task": outputs.loss}
                for m in loss_terms:
                    terms[m.name] = m.loss_term(model, batch, outputs)
                accelerator.backward(sum(terms.values()))
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float().item() / t.grad_accum
            window_tokens += int(batch["attention_mask"].sum())
        # One small all-reduce per step: every process logs (and checks) the global mean of each term.
        means = accelerator.reduce(torch.tensor(list(sums.values()), device=accelerator.device), "mean")
        sums = dict(zip(sums, means.tolist()))
        total_loss = sum(sums.values())
        if not math.isfinite(total_loss):
            last = latest_checkpoint(out)
            raise NonFiniteLossError(
                f"loss became {total_loss} at step {step + 1} (terms: {sums}); stopped without saving. "
                f"Last good checkpoint: {last[1] if last else 'none'}. Try a lower training.lr or set max_grad_norm.")
        for m in gradient_filters:
            m.filter_gradients(model, step)
        if t.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        if step % t.log_every == 0 or step == total_steps:
            elapsed = time.perf_counter() - window_start
            tokens = accelerator.reduce(torch.tensor(window_tokens, device=accelerator.device), "sum").item()
            row = {"step": step, "loss": total_loss, **{f"loss/{k}": v for k, v in sums.items()},
                   "lr": scheduler.get_last_lr()[0], "tokens_per_s": tokens / max(elapsed, 1e-9),
                   "step_time_s": elapsed / (step - window_first_step)}
            log.write(row)
            bar.set_postfix(loss=f"{total_loss:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            window_tokens, window_start, window_first_step = 0, time.perf_counter(), step
        if dev_loader is not None and ((t.eval_every and step % t.eval_every == 0) or step == total_steps):
            log.write({"step": step, "eval/loss": dev_loss(model, dev_loader, accelerator)})
        decisions = [d for m in monitors if (d := m.check(model, step, step == total_steps)) is not None]
        for d in decisions:
            if d.metrics:
                log.write({"step": step, **d.metrics})
        stop = next((d for d in decisions if d.stop), None)
        if stop is not None:
            if stop.weights is not None:
                accelerator.unwrap_model(model).load_state_dict(stop.weights, strict=False)
            accelerator.print(stop.reason)
            break
        if t.save_every and step % t.save_every == 0 and step < total_steps:
            save_checkpoint(accelerator, out, step, {"total_steps": total_steps}, t.keep_last)
        if window_first_step == step:  # just logged: eval and checkpoint time is not training time
            window_start = time.perf_counter()
    bar.close()

    model = accelerator.unwrap_model(model)
    for m in mitigations:  # 5
        if isinstance(m, WeightTransform):
            model = m.transform_weights(model, ctx)
    final_dir = out / "final"
    if accelerator.is_main_process:
        save_final(model, tokenizer, config, final_dir)
    accelerator.wait_for_everyone()
    log.close()
    return RunResult(out, final_dir, log.path, step, log.rows)


def prepare_fresh_output(out: Path, overwrite: bool, accelerator) -> None:
    previous = [p for p in ("metrics.jsonl", "checkpoints", "final") if (out / p).exists()]
    if previous and not overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(previous)}): pass --resume to continue it, "
                              "--overwrite to replace it, or set output.dir elsewhere")
    if previous and accelerator.is_main_process:
        import shutil

        for p in previous + ["tensorboard"]:
            target = out / p
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    accelerator.wait_for_everyone()


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

"""The training loop, in four phases (each a function below):

    train(config, resume=False, overwrite=False, allow_config_change=False) -> RunResult

    lock the output dir (another live run holds it: stop at once)
    plan: fresh, overwrite or resume; refuse to clobber a run, to resume a finished one, or to resume
          under a changed config (retain.training.rundir) — reads only
    1. load_and_check    tokenizer, model, data, mitigations; roles 1-3; optimizer, scheduler, seeded
                         loaders, accelerator.prepare — every user error has surfaced by now
    2. claim_output_dir  only now may an old run's outputs be deleted; resume from the newest checkpoint
                         (weights, optimizer, RNG, mitigation state, data position); write config.yaml
    3. train_steps       per optimizer step: the step's micro-batches, forward with token weights (role 4)
                         + loss terms (role 5), token-weighted backward (retain.training.step), gradient
                         filters (role 6), clip, stop if not finite or collapsed (retain.training.collapse),
                         optimizer and scheduler step, log, dev loss, monitors (role 7: may stop with other
                         weights), checkpoint if finite and not collapsing
    4. finish            weight transforms (role 8), final/ (model, or adapter [+ merged/]) if finite

The roles, in the order the loop calls them (retain.mitigations.roles.ORDER; a test keeps this equal):

    1. ModelTransform.transform_model: once, on the loaded model (PEFT, freezing)
    2. DataTransform.transform_data: once, on the tokenized task examples (replay)
    3. Setup.setup: once, after the two above and before the first step (anchors, Fisher, the base model's retention scores)
    4. TokenWeights.token_weights: every micro-batch: weights of the task loss's target tokens from the model's own prediction there (DFT, EAFT, ASFT)
    5. LossTerm.loss_term: every micro-batch: a named term added to the task loss (KL, L2-SP, EWC, SI)
    6. GradientFilter.filter_gradients: every step, after backward and before clipping (progressive unfreezing)
    7. Monitor.check: every step, after the optimizer step, at its own cadence: continue, stop, or stop with other weights (retention budget)
    8. WeightTransform.transform_weights: once, on the trained model (WiSE-FT interpolation)
       Stateful.state_dict / load_state_dict: runtime state saved in every checkpoint and restored on resume (retention history, penalty anchors)
       WritesFiles.files: files for the output dir (retention.json, fisher.pt), written by the loop on the main process after setup, resume and each deciding check

Gradient accumulation is exact: the step's loss is the mean over all its target tokens, across
micro-batches and processes, so batch 8 × accumulation 1 equals 4 × 2. Per-token loss terms (KL)
are weighted the same way; penalties on the weights alone (L2-SP, EWC, SI) count once per step.
The host syncs once per step (the finiteness check) and reads values only at log steps, where the
logged loss and gradient norm are means over the steps since the last log.

`training.objective: sft | dpo | grpo` (retain.objectives) is what the task loss is, not this order: the
objective loads data.train, collates it, sets up its reference after role 3, prepares each step's
micro-batches (GRPO samples and rewards here), gives the step its loss terms ("task", "dpo", "grpo", ...),
logs its own metrics and evaluates data.dev.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from retain.config import RunConfig, config_to_yaml, total_steps_for
from retain.core.paths import resolve_path
from retain.core.schema import ConfigError
from retain.data import Dataset, SeededOrder, pack
from retain.core.files import atomic_torch_save, atomic_write_json, atomic_write_text
from retain.mitigations import MITIGATIONS, build_mitigations
from retain.mitigations.roles import (Context, DataTransform, Decision, GradientFilter, LossTerm, ModelTransform, Monitor,
                                     Setup, Stateful, WeightTransform, WritesFiles, playing)
from retain.model import Reference
from retain.model.loading import (check_max_length, enable_gradient_checkpointing, load_model, load_tokenizer,
                             model_source)
from retain.model.weights import restore
from retain.training.carryover import load_optimizer_moments
from retain.training.carryover import save_optimizer_state as save_optimizer_state_file
from retain.training.checkpoint import (NonFiniteError, any_failed, check_finite, disk_full, last_good,
                                        load_checkpoint, save_checkpoint, save_final)
from retain.training.collapse import dead_step, make_watch
from retain.training.metrics_log import LogWindow, MetricsLog, make_trackers, tracker_config
from retain.model.precision import choose_bf16, describe_precision, fresh_accelerator_state, this_machine
from retain.training.rundir import Start, clear_outputs, plan_start, run_lock
from retain.objectives import Objective, make_objective
from retain.training.step import accumulate_gradients

NonFiniteLossError = NonFiniteError  # the name earlier releases raised


@dataclass
class RunResult:
    output_dir: Path
    final_dir: Path
    metrics_path: Path
    steps: int
    metrics: list[dict] = field(default_factory=list)


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

    hardware = this_machine()
    bf16 = choose_bf16(config.training.bf16, hardware)  # auto: only where the hardware does bf16 natively
    fresh_accelerator_state()  # this run's precision, whatever an earlier run in this process used
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no",
                              gradient_accumulation_steps=config.training.grad_accum,
                              log_with=make_trackers(config.training, Path(config.output.dir)) or None)
    note = describe_precision(bf16, config.training.bf16, hardware)
    if note:
        accelerator.print(note)
    return accelerator


def train(config: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          allow_config_change: bool = False, monitors: tuple = (), optimizer_state_in: Path | None = None,
          save_optimizer_state: bool = False) -> RunResult:
    """Run the whole fine-tune of `config`; with `resume`, continue from the newest checkpoint.

    A fresh run refuses an output directory that already holds a run (nothing is lost by
    accident); `overwrite` replaces it, but only once the new run's data, model and mitigations
    have loaded. `resume` refuses a finished run, and a config that differs from the
    checkpoint's unless `allow_config_change` (then the new values apply from the resumed step).
    The output directory is locked for the run's duration. `monitors`: Monitor objects (role 7) checked
    after the config's own, not part of the config (the tuner's dev check that prunes a trial).
    `optimizer_state_in`: a fresh (not resumed) run starts from this optimizer.pt's per-weight state instead
    of zeros; `save_optimizer_state`: write <output.dir>/optimizer.pt at the end (retain.training.carryover).
    """
    out = Path(config.output.dir)
    accelerator = make_accelerator(config)
    with run_lock(out, accelerator):
        return _train_locked(config, out, accelerator, resume, overwrite, progress, allow_config_change, monitors,
                             optimizer_state_in, save_optimizer_state)


@dataclass
class Run:
    """Everything a run holds once loaded and checked: what the phases below pass along."""

    config: RunConfig
    out: Path
    accelerator: Any
    start: Start
    tokenizer: Any
    model: torch.nn.Module  # prepared by accelerate (may be a DDP wrapper): forward and backward go through it
    inner: torch.nn.Module  # the same model unwrapped: what mitigations' roles get
    mitigations: list
    names: list[str]
    optimizer: Any
    scheduler: Any
    train_loader: Any
    dev_loader: Any
    ctx: Context
    total_steps: int
    per_step: int  # examples per optimizer step, all processes
    seen: int  # examples consumed so far
    objective: Objective  # SFT, DPO or GRPO (training.objective): what the data is and what the task loss is

    def playing(self, role: type) -> list:
        return playing(self.mitigations, role)

    def stateful(self) -> dict[str, Any]:
        roles = {name: m for name, m in zip(self.names, self.mitigations) if isinstance(m, Stateful)}
        return {**roles, "objective": self.objective} if isinstance(self.objective, Stateful) else roles


def _train_locked(config: RunConfig, out: Path, accelerator, resume: bool, overwrite: bool, progress: bool,
                  allow_config_change: bool, monitors: tuple = (), optimizer_state_in: Path | None = None,
                  save_optimizer_state: bool = False) -> RunResult:
    """train() for a process group holding the output dir's lock: the four phases."""
    start = plan_start(out, config, resume, overwrite, allow_config_change)  # reads only
    if start.note:
        accelerator.print(start.note)
    run = load_and_check(config, out, accelerator, start)
    if optimizer_state_in is not None and start.checkpoint is None:  # a resumed run has its own in the checkpoint
        load_optimizer_moments(run.optimizer, optimizer_state_in)  # before claiming: a bad file changes nothing
    log = claim_output_dir(run)
    step = train_steps(run, log, progress, monitors)
    final_dir = finish(run, step)
    if save_optimizer_state and accelerator.is_main_process:
        save_optimizer_state_file(run.optimizer, out)
    log.close()
    return RunResult(out, final_dir, log.path, step, log.rows)


def load_and_check(config: RunConfig, out: Path, accelerator, start: Start) -> Run:
    """Phase 1: load the model, data and mitigations, play roles 1-3, build the optimizer and loaders.
    Every user error surfaces here; nothing in the output dir changes."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    t = config.training
    set_seed(t.seed)
    tokenizer = run_tokenizer(config)
    mitigations = build_mitigations(config.mitigations)
    names = [name for name in MITIGATIONS if name in config.mitigations]  # build_mitigations' order
    objective = make_objective(config, mitigations)  # SFT's records, DPO's pairs or GRPO's prompts; the task loss

    # The data first: a bad row is an error before the model takes time and memory to load.
    train_set = objective.load(config.data.train, tokenizer, config.data)
    dev_set = objective.load(config.data.dev, tokenizer, config.data) if config.data.dev else None
    model = load_model(config.model)
    check_max_length(config.data.max_length, model, config.model.name)
    packing = config.data.packing  # then a training item is a row of examples, and epochs count rows
    total_steps = total_steps_for(config, len(pack(train_set.examples, config.data.max_length)) if packing
                                  else len(train_set), accelerator.num_processes)
    if start.checkpoint is not None and start.step >= total_steps:
        raise ConfigError(f"--resume: {start.checkpoint} is at step {start.step}, but this config trains "
                          f"{total_steps} steps")
    ctx = Context(tokenizer=tokenizer, total_steps=total_steps, max_length=config.data.max_length,
                  load_base_model=lambda: load_model(config.model), output_dir=out,
                  dev_examples=dev_set.examples if dev_set and objective.supervised else None,
                  model_source=lambda: model_source(config.model))

    model = transform_model(model, config, mitigations, ctx)  # role 1
    examples = transform_data(train_set, dev_set, config, mitigations, ctx, accelerator)  # role 2
    n = accelerator.num_processes
    per_step = t.batch_size * t.grad_accum * n
    accelerator.print(f"{total_steps} optimizer steps on {n} process{'es' if n > 1 else ''}, global batch {per_step}"
                      f"{' rows' if packing else ''}")

    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if t.scheduler == "constant" else t.scheduler,
                              optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=total_steps)
    seen = start.step * per_step if start.examples_seen is None else start.examples_seen
    epochs_needed = math.ceil((seen + (total_steps - start.step) * per_step) / len(examples)) + 1
    pad_id = tokenizer.pad_token_id
    order = SeededOrder(len(examples), t.seed, epochs_needed)
    train_loader = data_loader(examples, objective, pad_id, t.batch_size, t.seed, order)
    dev_loader = data_loader(dev_set.examples, objective, pad_id, t.batch_size, t.seed) if dev_set else None
    # The scheduler is stepped by us once per optimizer step (accelerate's wrapper would step it once
    # per process), and registered so that checkpoints carry it.
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    accelerator.register_for_checkpointing(scheduler)
    if dev_loader is not None:
        dev_loader = accelerator.prepare(dev_loader)
    inner = accelerator.unwrap_model(model)
    for m in playing(mitigations, Setup):  # role 3, on the prepared model (its device and dtype)
        m.setup(inner, ctx)
    # its reference is the model as the mitigations left it (adapters, frozen)
    objective.setup(inner, ctx, examples, dev_set.examples if dev_set else None)
    return Run(config, out, accelerator, start, tokenizer, model, inner, mitigations, names, optimizer, scheduler,
               train_loader, dev_loader, ctx, total_steps, per_step, seen, objective)


def run_tokenizer(config: RunConfig):
    """The model's tokenizer; a data.chat_template overrides its template from now on: general data (replay,
    Fisher) renders with it, and final/ saves it, so the fine-tune is used the way it was trained."""
    tokenizer = load_tokenizer(config.model)
    if config.data.chat_template:
        tokenizer.chat_template = resolve_path(config.data.chat_template).read_text(encoding="utf-8")
    return tokenizer


def transform_model(model, config: RunConfig, mitigations: list, ctx: Context):
    """Role 1 on the loaded model: QLoRA's preparation first, then the mitigations' transforms (adapters,
    freezing), then gradient checkpointing on the model as trained (adapters included)."""
    if config.model.load_in_4bit:  # QLoRA: norms and head in float32, inputs that carry a gradient
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    for m in playing(mitigations, ModelTransform):
        model = m.transform_model(model, ctx)
    if config.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def transform_data(train_set, dev_set, config: RunConfig, mitigations: list, ctx: Context, accelerator) -> list:
    """Role 2 on the task's examples (replay mixes its pool in, self-distillation rewrites the answers), then
    packing into rows when data.packing asks: the items the loader draws."""
    examples = train_set.examples
    for m in playing(mitigations, DataTransform):
        examples = m.transform_data(examples, ctx)
    report_data(accelerator, train_set, dev_set, len(examples))
    if config.data.packing:
        n_examples, examples = len(examples), pack(examples, config.data.max_length)
        accelerator.print(f"packed: {n_examples} examples in {len(examples)} rows of up to "
                          f"{config.data.max_length} tokens")
    return examples


def data_loader(data: list, objective, pad_id: int, batch_size: int, seed: int,
                sampler=None) -> torch.utils.data.DataLoader:
    """Batches of `data` collated by the objective. Its own generator: iterating a DataLoader draws a seed, and
    drawing it from the global RNG would shift dropout after a resume. Items are (index, example): an SFT batch says
    which examples it holds (what KL caches its teacher by)."""
    return torch.utils.data.DataLoader(list(enumerate(data)), batch_size=batch_size, sampler=sampler,
                                       collate_fn=lambda b: objective.collate(b, pad_id),
                                       generator=torch.Generator().manual_seed(seed))


def claim_output_dir(run: Run) -> MetricsLog:
    """Phase 2: only now may an earlier run's (or attempt's) outputs go. Resume from the checkpoint or
    start afresh; write config.yaml and the mitigations' files."""
    accelerator, out, start = run.accelerator, run.out, run.start
    if start.checkpoint is None and accelerator.is_main_process:
        clear_outputs(out)
    accelerator.wait_for_everyone()
    log = MetricsLog(out, accelerator, tracker_config(run.config))
    if start.checkpoint is not None:
        resume_from(start, accelerator, run.optimizer, run.scheduler, run.stateful())
        log.truncate_after(start.step)
        # The data order is fixed by the seed: skip the micro-batches the checkpoint had consumed
        # (counted in examples, so that an allowed change of batch size still lands in the right place).
        micro_batch = run.config.training.batch_size * accelerator.num_processes
        run.train_loader = accelerator.skip_first_batches(run.train_loader, run.seen // micro_batch)
        accelerator.print(f"resumed from {start.checkpoint} (step {start.step})")
    if accelerator.is_main_process:
        atomic_write_text(out / "config.yaml", config_to_yaml(run.config))
    write_files(accelerator, out, run.mitigations)
    return log


def train_steps(run: Run, log: MetricsLog, progress: bool, extra_monitors: tuple = ()) -> int:
    """Phase 3: optimizer steps until the last, or until a monitor stops the run. Returns the last step."""

    t, accelerator, model, out = run.config.training, run.accelerator, run.model, run.out
    loss_terms, gradient_filters, monitors = (run.playing(role) for role in (LossTerm, GradientFilter, Monitor))
    monitors = [*monitors, *extra_monitors]
    stateful = run.stateful()
    config_yaml = config_to_yaml(run.config)
    step, total_steps = run.start.step, run.total_steps
    batches = iter(run.train_loader)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))
    window = LogWindow(accelerator.device, step)
    # SFT's plain loss only: ln V is its scale (DPO's, GRPO's and token-weighted losses have others)
    collapse = make_watch(run.inner, t.lr) if run.objective.plain_next_token_loss else None
    while step < total_steps:
        # All of the step's micro-batches first: their target tokens weight each one's loss.
        micro_batches = [next(batches) for _ in range(t.grad_accum)]
        micro_batches = run.objective.prepare(run.inner, micro_batches)  # GRPO samples and rewards here
        shares = accumulate_gradients(model, run.inner, micro_batches, loss_terms, accelerator,
                                      run.objective)  # roles 4 and 5
        terms = accelerator.reduce(torch.stack(list(shares.values())), "sum")  # (n_terms,) this step's values
        for m in gradient_filters:  # role 6
            m.filter_gradients(run.inner, step)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)
        dead = check_step(shares, terms, grad_norm, collapse, step, out)
        if collapse:
            collapse.after_step(dead, step + 1, total_steps, out, accelerator.is_main_process)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        step += 1
        run.seen += run.per_step
        bar.update(1)
        window.add(list(shares), terms, grad_norm, micro_batches)

        if step % t.log_every == 0 or step == total_steps:
            row = window.row(step, accelerator, run.scheduler.get_last_lr()[0])
            row.update(run.objective.log_row(accelerator))
            log.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            window = LogWindow(accelerator.device, step)
        if run.dev_loader is not None and ((t.eval_every and step % t.eval_every == 0) or step == total_steps):
            log.write({"step": step, **run.objective.evaluate(model, run.inner, run.dev_loader, accelerator)})
        stop = consult(monitors, run, step, log)  # role 7
        if stop is not None:
            if stop.weights is not None:
                restore(run.inner, stop.weights)
            accelerator.print(stop.reason)
            break
        if t.save_every and step % t.save_every == 0 and step < total_steps and not (collapse and collapse.in_streak):
            check_finite(accelerator, run.inner, run.optimizer, out, f"after step {step}")
            role_states = {name: m.state_dict() for name, m in stateful.items()} if accelerator.is_main_process else {}
            save_checkpoint(accelerator, out, step, t.keep_last,
                            {"total_steps": total_steps, "examples_seen": run.seen}, config_yaml, role_states)
        window.restart_clock_if_empty(step)  # eval and checkpoint time is not training time
    bar.close()
    return step


def check_step(shares: dict, terms: torch.Tensor, grad_norm: torch.Tensor, collapse, step: int, out: Path) -> bool:
    """The step's one host sync: a non-finite loss or gradient must never reach the weights (NonFiniteError before
    the optimizer step); returns whether the model looks dead (collapse's watch, when it runs)."""
    finite = torch.isfinite(torch.cat([terms, grad_norm.reshape(1).to(terms)])).all()
    dead = dead_step(terms[0], grad_norm, collapse.vocab_size) if collapse else torch.zeros_like(finite)
    finite, dead = torch.stack([finite, dead.to(finite)]).tolist()
    if not finite:
        values = dict(zip(shares, terms.tolist()))
        raise NonFiniteError(
            f"loss became {sum(values.values())} (terms: {values}, gradient norm {grad_norm.item()}) at step "
            f"{step + 1}; stopped before the optimizer step, nothing saved. {last_good(out)} "
            "Try a lower training.lr or set max_grad_norm.")
    return dead


def consult(monitors: list, run: Run, step: int, log: MetricsLog) -> Decision | None:
    """Every monitor's check after `step`: their metrics logged, their files written; the first decision to stop."""
    decided = [(m, d) for m in monitors if (d := m.check(run.inner, step, step == run.total_steps)) is not None]
    for _, d in decided:
        if d.metrics:
            log.write({"step": step, **d.metrics})
    write_files(run.accelerator, run.out, [m for m, _ in decided])
    return next((d for _, d in decided if d.stop), None)


def finish(run: Run, step: int) -> Path:
    """Phase 4: the base-model references let go (their frozen copies' memory), role 8 (weight transforms),
    then final/ — if the weights are finite."""
    release_references(run.objective, *run.mitigations)
    accelerator, out = run.accelerator, run.out
    model = run.inner
    for m in run.playing(WeightTransform):  # role 8
        model = m.transform_weights(model, run.ctx)
    final_dir = out / "final"
    check_finite(accelerator, model, None, out, f"the final weights (step {step})")
    error = None
    if accelerator.is_main_process:
        try:
            save_final(model, run.tokenizer, run.config, final_dir)
        except Exception as e:  # noqa: BLE001 (any_failed raises it everywhere); the partial final/ is gone already
            error = disk_full(e, str(final_dir), out)
    any_failed(accelerator, error, "writing final/")
    return final_dir


def release_references(*holders) -> None:
    """Drop every base-model reference the objective and the mitigations hold: no role reads the base's
    logits once the last step is taken, and a frozen copy is as large as the model."""
    for holder in holders:
        if isinstance(getattr(holder, "reference", None), Reference):
            holder.reference.release()


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

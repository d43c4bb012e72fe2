"""Distillation from the frozen base model: keep the fine-tune's next-token distribution near the base's.

The base is retain.model.reference's: under PEFT the same model with its adapters disabled (no second
copy); for full fine-tuning, a frozen copy made before the first step. `cache_top_k` stores the base's top-k
log-probs of each example the first time it is seen, so later epochs skip the reference forward.

Why a step with KL costs little more than the base's forward:
- Positions first. The KL is needed only where a target is (N of the batch's B·T positions). Both
  sides are gathered there before any softmax over the V-word vocabulary: the loop's student logits
  come at the targets only (retain.training.step), and the base's LM head runs on the N hidden states
  alone (retain.model.head): neither side makes (B, T, V) logits.
- One pass, bounded memory. `_RowKL` computes each chunk of rows' KL and its gradient with respect to
  the student's logits together (float32 temporaries of chunk × V) and keeps only that (N, V)
  gradient for backward, where autograd through log-softmaxes would keep several float32 (N, V)
  tensors and recompute.
- No host sync once an example has been seen. The gathers need N on the host; the loop's batches
  carry their examples' indices (`batch["index"]`, host ints), each example's number of KL positions
  is remembered the first time (one `nonzero`, which syncs), and later batches gather with
  `nonzero_static` of the known size. The cached teacher's rows are found from the same indices.
- The base runs under no_grad, in the run's compute dtype (accelerate's autocast wraps the model's
  forward, and the frozen copy's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from retain.model.head import shifted_rows
from retain.mitigations.roles import Context, LossTerm, Setup
from retain.model.reference import Reference

# Rows per chunk of the KL: about CHUNK_ELEMENTS / V, never fewer than CHUNK_MIN_ROWS. On a CPU, chunks whose
# four float32 temporaries stay in cache (1 MB each: 64 rows of a 4k vocabulary ran the KL 20% faster than
# 256 rows, measured on the 2-core build machine); on a GPU, chunks big enough that the kernels, not their
# launches, take the time (64 MB each).
CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}
CHUNK_MIN_ROWS = 16


def _chunk_rows(vocab: int, device: torch.device) -> int:
    elements = CHUNK_ELEMENTS["cpu" if device.type == "cpu" else "cuda"]  # other accelerators as a GPU
    return max(CHUNK_MIN_ROWS, elements // vocab)


class _RowKL(torch.autograd.Function):
    """T² · Σ over rows of KL(teacher‖student) ("forward") or KL(student‖teacher) ("reverse") of softmax(·/T).

    student: (R, V) logits, of which the rows `index` (N,) count (None: all R, in order); teacher: (N, V)
    logits at those positions, or (R', V) with `teacher_index` (N,). The gradient goes to the student
    only (the teacher is a fixed target); it is computed in the forward, chunk by chunk:
        forward KL:  d/dz = T · (q − p)                       p = softmax(teacher/T), q = softmax(z/T)
        reverse KL:  d/dz = T · q ⊙ (log q − log p − KL_row)
    """

    @staticmethod
    def forward(ctx, student, index, teacher, teacher_index, temperature, direction):
        n, vocab = (student.shape[0] if index is None else index.numel()), student.shape[-1]
        wants_grad = ctx.needs_input_grad[0]
        grad = torch.empty((n, vocab), dtype=student.dtype, device=student.device) if wants_grad else None
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        chunk = _chunk_rows(vocab, student.device)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            s_rows = student[a:b] if index is None else student.index_select(0, index[a:b])  # a view when all rows
            t_rows = teacher[a:b] if teacher_index is None else teacher.index_select(0, teacher_index[a:b])
            s = F.log_softmax(_scaled(s_rows, temperature), dim=-1)  # (c, V) log q
            t = F.log_softmax(_scaled(t_rows, temperature), dim=-1)  # (c, V) log p
            if direction == "forward":
                p = t.exp()
                total += torch.vdot(p.flatten(), t.sub_(s).flatten())  # Σ p (log p − log q)
                if wants_grad:  # written straight into the gradient's rows: no copy
                    torch.sub(s.exp_(), p, out=grad[a:b])
                    if temperature != 1:
                        grad[a:b] *= temperature
            else:
                q = s.exp()
                log_ratio = s.sub_(t)  # (c, V) log q − log p
                per_row = (q * log_ratio).sum(-1, keepdim=True)  # (c, 1)
                total += per_row.sum()
                if wants_grad:
                    torch.mul(q, log_ratio.sub_(per_row), out=grad[a:b])
                    if temperature != 1:
                        grad[a:b] *= temperature
        ctx.save_for_backward(index, grad)
        ctx.rows = student.shape[0]
        return total * temperature ** 2

    @staticmethod
    def backward(ctx, grad_output):
        index, grad = ctx.saved_tensors
        if index is None:  # every row: the gradient is already the student's shape
            return grad * grad_output.to(grad.dtype), None, None, None, None, None
        full = torch.zeros((ctx.rows, grad.shape[-1]), dtype=grad.dtype, device=grad.device)  # (R, V)
        full.index_copy_(0, index, grad).mul_(grad_output.to(grad.dtype))  # no second (N, V) temporary
        return full, None, None, None, None, None


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T in float32 (no copy when they are float32 already and T = 1)."""
    logits = logits.float()
    return logits if temperature == 1 else logits / temperature


def kl_rows(student: torch.Tensor, index: torch.Tensor | None, teacher: torch.Tensor, temperature: float = 1.0,
            direction: str = "forward", teacher_index: torch.Tensor | None = None) -> torch.Tensor:
    """Sum (not mean) over N positions of the T²-scaled KL; 0-dim float32, gradient to `student` only.

    student: (R, V) logits (e.g. a batch's (B·T, V)), index: (N,) the rows that count, or None for all R;
    teacher: (N, V) logits at the same positions, or (R', V) rows picked by teacher_index (N,).
    """
    return _RowKL.apply(student, index, teacher, teacher_index, float(temperature), direction)


def top_k_rows_kl(student: torch.Tensor, index: torch.Tensor | None, teacher_ids: torch.Tensor,
                  teacher_logprobs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sum over N positions of the forward KL over the teacher's top-k tokens, both renormalised there.

    student: (R, V) logits, index: (N,) its rows that count (None: all R); teacher_ids, teacher_logprobs:
    (N, k). Only the (N, k) student logits are read: nothing of size V is computed.
    """
    picked = student.gather(-1, teacher_ids.long()) if index is None else student[index[:, None], teacher_ids.long()]
    s = F.log_softmax(_scaled(picked, temperature), dim=-1)  # (N, k)
    t = F.log_softmax(_scaled(teacher_logprobs, temperature), dim=-1)
    return (t.exp() * (t - s)).sum() * temperature ** 2


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                  temperature: float = 1.0, direction: str = "forward") -> torch.Tensor:
    """Mean over masked positions of KL(teacher‖student) ("forward") or KL(student‖teacher) ("reverse").

    logits: (B, T, V); mask: (B, T) bool. Scaled by T² so the gradient size does not depend on T.
    """
    mask = mask.to(student_logits.device)
    index = mask.flatten().nonzero().squeeze(1)  # (N,) only these rows are normalised over V
    vocab = student_logits.shape[-1]
    if teacher_logits.requires_grad:  # a teacher that learns too: autograd through both sides
        s = F.log_softmax(student_logits.reshape(-1, vocab)[index].float() / temperature, dim=-1)
        t = F.log_softmax(teacher_logits.reshape(-1, vocab)[index].float() / temperature, dim=-1)
        p, q = (t, s) if direction == "forward" else (s, t)
        total = (p.exp() * (p - q)).sum() * temperature ** 2
    else:
        total = kl_rows(student_logits.reshape(-1, vocab), index, teacher_logits.reshape(-1, vocab), temperature,
                        direction, teacher_index=index)
    return total / max(index.numel(), 1)


def top_k_kl(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
             mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL between teacher and student, both renormalised over the teacher's top-k tokens.

    student_logits: (B, T, V); teacher_ids, teacher_logprobs: (B, T, k); mask: (B, T).
    """
    mask = mask.to(student_logits.device)
    index = mask.flatten().nonzero().squeeze(1)
    k = teacher_ids.shape[-1]
    total = top_k_rows_kl(student_logits.reshape(-1, student_logits.shape[-1]), index,
                          teacher_ids.reshape(-1, k)[index], teacher_logprobs.reshape(-1, k)[index], temperature)
    return total / max(index.numel(), 1)


def positions(batch: dict, on: str) -> torch.Tensor:
    """(B, T) bool: the positions whose next token is a training target, on task/replay/all examples."""
    mask = torch.zeros_like(batch["labels"], dtype=torch.bool)
    mask[:, :-1] = batch["labels"][:, 1:] != -100
    if on != "all":
        chosen = batch["replay"] if on == "replay" else ~batch["replay"]
        mask &= chosen[:, None].to(mask.device)
    return mask


class TopKCache:
    """The base's top-k (token ids, log-probs) at each seen example's KL positions, in flat tensors.

    Example i's rows are start[i] ... start[i] + count[i] − 1, in position order, so a batch's rows
    are its examples' ranges one after another: found from the indices alone, no key built from the
    tokens. 8·k bytes per position (ids as int32), on the model's device; grown by doubling.
    """

    def __init__(self, k: int):
        self.k = k
        self.start: dict[int, int] = {}
        self.count: dict[int, int] = {}
        self.ids: torch.Tensor | None = None  # (capacity, k) int32
        self.logprobs: torch.Tensor | None = None  # (capacity, k) float32
        self.used = 0

    def __contains__(self, example: int) -> bool:
        return example in self.start

    def add(self, examples: list[int], counts: list[int], ids: torch.Tensor, logprobs: torch.Tensor) -> None:
        """Store the rows of `examples` (their counts summing to M): ids, logprobs (M, k), in example order."""
        m = ids.shape[0]
        if self.ids is None or self.used + m > self.ids.shape[0]:
            capacity = max(2 * (0 if self.ids is None else self.ids.shape[0]), self.used + m, 1024)
            grown_ids = torch.empty((capacity, self.k), dtype=torch.int32, device=ids.device)
            grown_logprobs = torch.empty((capacity, self.k), dtype=torch.float32, device=ids.device)
            if self.ids is not None:
                grown_ids[:self.used], grown_logprobs[:self.used] = self.ids[:self.used], self.logprobs[:self.used]
            self.ids, self.logprobs = grown_ids, grown_logprobs
        self.ids[self.used:self.used + m] = ids
        self.logprobs[self.used:self.used + m] = logprobs
        for example, n in zip(examples, counts):
            self.start[example], self.count[example] = self.used, n
            self.used += n

    def rows(self, examples: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, logprobs), each (N, k), at the KL positions of `examples`, in the batch's order."""
        at = torch.cat([torch.arange(self.start[i], self.start[i] + self.count[i]) for i in examples])
        at = at.to(self.ids.device, non_blocking=True)
        return self.ids[at], self.logprobs[at]


@dataclass(frozen=True)
class KLOptions:
    weight: float = field(default=0.5, metadata={"help": "loss += weight · KL, the KL a mean over target positions"})
    temperature: float = field(default=1.0, metadata={
        "help": "softens both distributions before the KL; the term is scaled by T² so its gradient keeps its size"})
    direction: Literal["forward", "reverse"] = field(default="forward", metadata={
        "help": "forward: KL(base‖fine-tune), covers the base's modes; reverse: KL(fine-tune‖base)"})
    apply_to: Literal["task", "replay", "all"] = field(default="all", metadata={
        "help": "whose target positions count: task examples, replay examples, or all"})
    cache_top_k: int = field(default=0, metadata={
        "help": "> 0: cache the base's top-k log-probs per example; later epochs skip its forward (forward KL only)"})

    def validate(self):
        if self.weight <= 0:
            yield "weight", f"must be > 0, got {self.weight}"
        if self.temperature <= 0:
            yield "temperature", f"must be > 0, got {self.temperature}"
        if self.cache_top_k and self.direction != "forward":
            yield "cache_top_k", "the cached teacher supports forward KL only"


class KLToBase(Setup, LossTerm):
    """KL divergence to the frozen base model's next-token distribution, added to the loss."""

    name = "kl"

    def __init__(self, options: KLOptions):
        self.options = options
        self.reference: Reference | None = None  # the base model, from setup on
        self.cache = TopKCache(options.cache_top_k)
        self.counts: dict[int, int] = {}  # example index -> its number of KL positions (host)

    def setup(self, model, ctx: Context) -> None:
        self.reference = Reference(model)

    def nonzero(self, batch: dict, flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,) long: where the 1-D `flags` are set, in order; `mask` (B, T) are the batch's KL positions.

        N is the batch's number of KL positions. Once every example of the batch has been seen, N is
        known on the host (each example's count is remembered) and nothing waits for the device; a
        first sight, or a batch without `index` (not from retain's loop), syncs once for N.
        """
        examples = batch.get("index")
        if examples is not None and all(i in self.counts for i in examples):
            return torch.nonzero_static(flags, size=sum(self.counts[i] for i in examples)).squeeze(1)
        found = flags.nonzero().squeeze(1)  # syncs: N decides the shape
        if examples is not None:
            self.counts.update(zip(examples, mask.sum(1).tolist()))
        return found

    def kl_rows_of(self, batch: dict, outputs) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(student (R, V) logits, their rows at the KL positions (N,; None: all R), those positions as
        flat b·T + t (N,)).

        The student's logits are (B, T', V) from a plain forward, or (N_targets, V) at `outputs.rows`
        when the loop ran the head at the targets only (retain.training.step); the KL's positions are
        targets, all of them or those of task or replay examples.
        """
        o = self.options
        logits, targets = outputs.logits, getattr(outputs, "rows", None)
        if targets is not None and o.apply_to == "all":  # the KL's rows are the logits' own
            return logits, None, targets
        mask = positions(batch, o.apply_to)  # (B, T)
        width = mask.shape[1]
        if targets is None:
            rows = self.nonzero(batch, mask.flatten(), mask)
            return logits.reshape(-1, logits.shape[-1]), shifted_rows(rows, width, logits.shape[1]), rows
        chosen = batch["replay"] if o.apply_to == "replay" else ~batch["replay"]  # (B,)
        picked = self.nonzero(batch, chosen.to(targets.device)[targets // width], mask)  # of the targets
        return logits, picked, targets[picked]

    def teacher_logits_at(self, model, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        """(N, V) logits of the base model at the batch's flat positions `rows`, under no_grad."""
        return self.reference.logits(model, batch, rows)

    def cached_teacher(self, model, batch: dict, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, logprobs), each (N, k): the base's top-k at the batch's KL positions `rows` (flat b·T + t),
        computed once per example and then read from the cache by the examples' indices."""
        examples = batch.get("index")
        if examples is None:  # no identity to cache by (a batch from outside retain's loop): compute now
            return self.top_k_at(model, batch, rows)
        first = {}
        for j, i in enumerate(examples):
            if i not in self.cache:
                first.setdefault(i, j)  # an example twice in one batch (an epoch boundary) is stored once
        if first:
            missing = list(first.values())
            at = torch.tensor(missing, device=batch["input_ids"].device)
            sub = {"input_ids": batch["input_ids"][at], "attention_mask": batch["attention_mask"][at],
                   "labels": batch["labels"][at], "replay": batch["replay"][at], "index": tuple(first)}
            sub_mask = positions(sub, self.options.apply_to)
            ids, logprobs = self.top_k_at(model, sub, self.nonzero(sub, sub_mask.flatten(), sub_mask))
            self.cache.add(list(first), [self.counts[i] for i in first], ids, logprobs)
        return self.cache.rows(examples)

    def top_k_at(self, model, batch: dict, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = F.log_softmax(self.teacher_logits_at(model, batch, rows).float(), dim=-1).topk(self.options.cache_top_k)
        return top.indices, top.values

    def loss_term(self, model, batch, outputs) -> torch.Tensor:
        o = self.options
        student, student_rows, rows = self.kl_rows_of(batch, outputs)
        if o.cache_top_k:
            ids, logprobs = self.cached_teacher(model, batch, rows)
            total = top_k_rows_kl(student, student_rows, ids, logprobs, o.temperature)
        else:
            teacher = self.teacher_logits_at(model, batch, rows)
            total = kl_rows(student, student_rows, teacher, o.temperature, o.direction)
        return o.weight * total / max(rows.numel(), 1)

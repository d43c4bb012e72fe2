"""A collapsed run: the model has died into guessing uniformly, and no step can bring it back.

A learning rate far too high can push a model into a state where every position's logits are equal (a norm's
scale or the last layer driven to zero): its loss is then exactly ln(V), the loss of a uniform guess over a
vocabulary of V tokens, and its gradient is zero, so the optimizer has nothing to follow. The numbers stay
finite, so the non-finite check never fires, and such a run used to finish "successfully" with a dead final/.
Measured on retain-tiny (V = 4096, ln V = 8.317766) at training.lr: 1000: step 1 loss 8.6255 with gradient
norm 131; steps 2 to 8 loss 8.317765, gradient norm 0.0.

The rule, per optimizer step (SFT's next-token loss only: DPO's and GRPO's losses have another scale):

    dead step   |task loss - ln V| < LOSS_TOLERANCE  and  gradient norm < GRADIENT_FLOOR
    collapsed   DEAD_STEPS dead steps in a row, or a dead last step

Both conditions at once: a freshly initialised model also scores about ln V, but its gradient is large (131
above); a well-trained model may have a tiny gradient, but its loss is far below ln V. A short streak, not one
step: AdamW's momentum still moves the weights for a few steps after the gradient vanishes, and a run that
comes back to life after one such step is not dead. No checkpoint is written during a streak, and the one
written just before it (its weights are the ones that scored the first dead step) is removed when the run
stops: `--resume` must not start from a dead model, and the last good checkpoint the message names is alive.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
import torch

from retain.core.errors import UserError
from retain.training.checkpoint import last_good, list_checkpoints

LOSS_TOLERANCE = 1e-3  # nats; a live model this close to uniform on every token is not one that was trained
GRADIENT_FLOOR = 1e-6
DEAD_STEPS = 3


class CollapseError(UserError, RuntimeError):
    """The model collapsed to a uniform guess with a zero gradient (see the module docstring); final/ is not written."""


def dead_step(task_loss: torch.Tensor, grad_norm: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Whether one step's numbers are a dead model's: a 0-dim bool tensor on their device (no host sync)."""
    return ((task_loss.float() - math.log(vocab_size)).abs() < LOSS_TOLERANCE) & (grad_norm.float() < GRADIENT_FLOOR)


class CollapseWatch:
    """Counts dead steps in a row and stops the run when the model has collapsed."""

    def __init__(self, vocab_size: int, lr: float):
        self.vocab_size, self.lr, self.streak = vocab_size, lr, 0

    def after_step(self, dead: bool, step: int, last_step: int, output_dir: Path, main_process: bool) -> None:
        """Record step `step`; CollapseError once DEAD_STEPS in a row were dead, or the last step was, after
        removing (on the main process) the checkpoints that hold the collapsed weights."""
        self.streak = self.streak + 1 if dead else 0
        if self.streak >= DEAD_STEPS or (self.streak and step == last_step):
            first = step - self.streak + 1
            removed = [path for saved, path in list_checkpoints(output_dir) if saved >= first - 1]
            if main_process:
                for path in removed:
                    shutil.rmtree(path, ignore_errors=True)
            gone = f"Removed {', '.join(map(str, removed))}: it holds the collapsed weights. " if removed else ""
            raise CollapseError(
                f"training collapsed at step {first}: from there the loss is ln({self.vocab_size}) = "
                f"{math.log(self.vocab_size):.4f}, a uniform guess over the vocabulary, with a zero gradient, so no "
                f"step can change it (checked through step {step}); final/ was not written. {gone}"
                f"{last_good(output_dir)} Lower "
                f"training.lr (it is {self.lr:g}), or add training.warmup_steps.")

    @property
    def in_streak(self) -> bool:
        """Whether the newest step was dead: its weights are not saved as a checkpoint."""
        return self.streak > 0


def make_watch(model: torch.nn.Module, lr: float) -> CollapseWatch | None:
    """A watch for `model`'s vocabulary (its config.vocab_size), or None for a model without one."""
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    return CollapseWatch(vocab_size, lr) if isinstance(vocab_size, int) and vocab_size > 1 else None


"""GRPO: reinforcement learning from rewards, with group-normalised advantages and an explicit KL leash.

Per prompt, sample a group of G completions from the policy, reward each (retain.preference.rewards), and
compare each completion with its own group:

    A_i = (r_i − mean(r_group)) / (std(r_group) + 1e-4)          (std unbiased, as TRL; scale_rewards: false
                                                                  keeps only the centring)
    loss = Σ_completion tokens [ −ρ_t · A_i + β · KL_t ] / (completion tokens of the step)
    ρ_t  = π(y_t) / π(y_t).detach()                              1 in value; its gradient is ∇log π
    KL_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1            the k3 estimator of KL(π‖π_ref), ≥ 0, times
                                                                  ρ_t so its gradient is the unbiased one

This is TRL's GRPOTrainer loss with one update per sample (num_iterations 1, so the clipped ratio is 1)
and its default token-level normalisation (`dapo`): the step divides by every completion token of the step,
which is retain's token-weighted accumulation. β is fixed, or adapted each step toward `target_kl`
(Ziegler et al. 2019: β ← β · (1 + 0.1 · clip(KL / target − 1, ±0.2))).

Logged (means over the steps since the last log): grpo/reward, reward/NAME per term, grpo/reward_std (within
groups), grpo/kl (per completion token), grpo/kl_coef, grpo/completion_tokens — the reward curve beside the
KL curve, so that a reward that rises while the model runs away from its base is visible.
"""

from __future__ import annotations

import torch

from retain.data import Example, collate
from retain.model.reference import Reference
from retain.objectives.protocol import Objective
from retain.preference.data import PromptExample, collate_prompts, load_prompts, to_device
from retain.preference.logprobs import Tally, ce_sum, token_logps
from retain.preference.options import GRPOOptions
from retain.preference.rewards import CompositeReward, RewardInput

ADAPT_RATE, ADAPT_CLIP = 0.1, 0.2  # the adaptive KL controller's gain and the clip of its error


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """(N,) advantages of rewards (N,) laid out group by group (N = prompts × group_size)."""
    grouped = rewards.view(-1, group_size)  # (prompts, G)
    centred = grouped - grouped.mean(1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(1, keepdim=True) + 1e-4)
    return centred.reshape(-1)


def grpo_token_terms(logps: torch.Tensor, ref_logps: torch.Tensor, advantages: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy-gradient term, KL) per token, (N, T) each, 0 outside `mask` (N, T).

    logps, ref_logps (N, T): the sampled tokens' log-probs under the policy (with grad) and the reference.
    """
    ratio = torch.exp(logps - logps.detach())  # 1; the gradient of the importance ratio at the sampling policy
    policy = -ratio * advantages[:, None]
    diff = ref_logps - logps
    # × ratio (1 in value): the gradient becomes (log π − log π_ref)·∇log π, the unbiased gradient of the
    # reverse KL (DeepSeek-V3.2's correction; TRL's default, use_bias_correction_kl)
    kl = (torch.exp(diff) - diff - 1) * ratio
    return policy * mask, kl * mask


def adapt_kl_coef(kl_coef: float, measured_kl: float, target_kl: float) -> float:
    """One step of the proportional controller: raise β when the KL is above target, lower it when below."""
    error = max(-ADAPT_CLIP, min(ADAPT_CLIP, measured_kl / target_kl - 1))
    return kl_coef * (1 + ADAPT_RATE * error)


@torch.no_grad()
def sample(model, prompts: list[list[int]], n: int, max_new_tokens: int, pad_id: int, eos_id: int | None,
           temperature: float = 1.0, greedy: bool = False) -> list[list[int]]:
    """`n` completions of each prompt (ids; the EOS kept when reached), in order [p1 × n, p2 × n, ...]."""
    rows = [p for p in prompts for _ in range(n)]
    width = max(map(len, rows))
    device = next(model.parameters()).device
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):  # left-padded: every row continues at the same column
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        attention_mask[i, width - len(ids):] = 1
    how = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id, **how)
    model.train(was_training)
    completions = []
    for ids in out[:, width:].tolist():
        if eos_id is not None and eos_id in ids:
            ids = ids[: ids.index(eos_id) + 1]
        completions.append(ids)
    return completions


class GRPO(Objective):
    """The GRPO objective: sample, reward, and push up the completions that beat their group."""

    name = "grpo"
    supervised = False  # prompts, not next-token examples
    plain_next_token_loss = False

    def __init__(self, options: GRPOOptions, replay: bool):
        self.options = options
        self.replay = replay
        self.reward = CompositeReward(options.rewards)
        self.kl_coef = options.kl_coef
        self.reference: Reference | None = None  # the base model, from setup on
        self.tally = Tally()
        self.step_kl: list[tuple[torch.Tensor, torch.Tensor]] = []  # this step's (KL sum, tokens), per micro-batch

    @classmethod
    def from_config(cls, config, mitigations: list) -> GRPO:
        return cls(config.training.grpo, "replay" in config.mitigations)

    # --- data ---

    def load(self, source, tokenizer, data):
        return load_prompts(source, tokenizer, data.max_length, data.chat)

    def collate(self, items: list, pad_id: int) -> dict:
        return collate_prompts([example for _, example in items], pad_id)  # items: (index, example)

    # --- once, before the first step ---

    def setup(self, model, ctx, train_examples: list, dev_examples: list | None) -> None:
        """The reference (the KL is logged even at kl_coef 0), and the base's greedy answers if a term needs them."""
        self.tokenizer = ctx.tokenizer
        self.max_length = ctx.max_length
        self.reference = Reference(model)
        if self.reward.needs_base_answers:
            prompts = [x for x in [*train_examples, *(dev_examples or [])] if isinstance(x, PromptExample)]
            self.base_answers(model, prompts)

    def base_answers(self, model, prompts: list[PromptExample], chunk: int = 32) -> None:
        with self.reference.model(model) as ref:
            for i in range(0, len(prompts), chunk):
                part = prompts[i: i + chunk]
                answers = self.sample(ref, part, 1, greedy=True)
                for p, ids in zip(part, answers):
                    p.base_answer = self.decode(ids)

    def sample(self, model, prompts: list[PromptExample], n: int, greedy: bool = False) -> list[list[int]]:
        t = self.tokenizer
        return sample(model, [p.input_ids for p in prompts], n, self.options.max_new_tokens, t.pad_token_id,
                      t.eos_token_id, self.options.temperature, greedy)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def score(self, prompts: list[PromptExample], completions: list[list[int]], n: int):
        """(total (len(completions),) on the CPU, each term's values by name) of completions laid out n a prompt."""
        inputs = [RewardInput(prompts[i // n].prompt, self.decode(ids), prompts[i // n].reference,
                              prompts[i // n].base_answer) for i, ids in enumerate(completions)]
        total, by_term = self.reward(inputs)
        return torch.tensor(total, dtype=torch.float32), by_term

    # --- every step ---

    def prepare(self, model, micro_batches: list[dict]) -> list[dict]:
        """Adapt β to the last step's KL, then roll out every micro-batch: sample, reward, reference log-probs."""
        o = self.options
        if o.target_kl is not None and self.step_kl:
            total, count = (sum(x) for x in zip(*self.step_kl))
            self.kl_coef = adapt_kl_coef(self.kl_coef, float(total) / max(float(count), 1.0), o.target_kl)
        self.step_kl = []
        return [self.rollout(model, b) for b in micro_batches]

    def rollout(self, model, batch: dict) -> dict:
        o, G = self.options, self.options.group_size
        prompts, general = batch["prompts"], batch["general"]
        completions = self.sample(model, prompts, G) if prompts else []
        rewards, by_term = self.score(prompts, completions, G)
        advantages = group_advantages(rewards, G, o.scale_rewards) if prompts else rewards
        rows = []
        for i, ids in enumerate(completions):
            prompt = prompts[i // G].input_ids
            room = max(self.max_length - len(prompt), 1)  # the completion may be cut, never the prompt's end
            rows.append(Example(prompt + ids[:room], [-100] * len(prompt) + ids[:room]))
        out = to_device(collate(rows + list(general), self.tokenizer.pad_token_id), next(model.parameters()).device)
        N = len(rows)
        out["n_sampled"] = N
        out["advantages"] = advantages.to(out["input_ids"].device)
        sampled = {k: out[k][:N] for k in ("input_ids", "attention_mask")}
        out["ref_logps"] = (token_logps(self.reference.logits(model, sampled), out["labels"][:N], o.temperature) if N
                            else torch.zeros((0, out["labels"].shape[1] - 1), device=out["labels"].device))
        if prompts:
            self.tally.add("grpo/reward", rewards)
            for name, values in by_term.items():
                self.tally.add(f"reward/{name}", torch.tensor(values))
            self.tally.add("grpo/reward_std", rewards.view(-1, G).std(1))
            self.tally.add("grpo/completion_tokens", torch.tensor([float(len(c)) for c in completions]))
        return out

    def count(self, batch: dict) -> torch.Tensor:
        """() the micro-batch's target tokens: sampled completion tokens and replay's tokens."""
        return (batch["labels"][:, 1:] != -100).sum()

    def loss(self, model, inner, batch: dict):
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        N, labels = batch["n_sampled"], batch["labels"]
        logps = token_logps(outputs.logits[:N], labels[:N], self.options.temperature)  # (N, T-1)
        mask = labels[:N, 1:] != -100
        policy, kl = grpo_token_terms(logps, batch["ref_logps"], batch["advantages"], mask.float())
        n = self.count(batch).clamp(min=1)
        terms = {"grpo": policy.sum() / n, "grpo_kl": self.kl_coef * kl.sum() / n}
        if self.replay:
            terms["replay"] = ce_sum(outputs.logits[N:], labels[N:]) / n
        self.tally.add("grpo/kl", kl.detach()[mask])
        self.tally.add("grpo/kl_coef", torch.tensor([self.kl_coef]))
        self.step_kl.append((kl.detach().sum(), mask.sum()))
        return terms, outputs

    def log_row(self, accelerator) -> dict:
        return self.tally.means(accelerator)

    @torch.no_grad()
    def evaluate(self, model, inner, loader, accelerator) -> dict:
        """eval/reward and eval/reward/NAME: the policy's greedy completions of the dev prompts, rewarded."""
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            prompts = batch["prompts"]
            if not prompts:
                continue
            total, by_term = self.score(prompts, self.sample(inner, prompts, 1, greedy=True), 1)
            for name, values in {"eval/reward": total.tolist(), **{f"eval/reward/{k}": v for k, v in by_term.items()}}.items():
                sums[name] = sums.get(name, 0.0) + sum(values)
            n += len(prompts)
        names = sorted(sums)
        values = accelerator.reduce(torch.tensor([sums[k] for k in names] + [float(n)], device=accelerator.device), "sum")
        return {k: v / max(values[-1].item(), 1.0) for k, v in zip(names, values[:-1].tolist())}

    def state_dict(self) -> dict:
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        if "kl_coef" not in state:
            raise ValueError("no kl_coef in the saved GRPO state")
        self.kl_coef = float(state["kl_coef"])

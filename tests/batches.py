"""Batches and references that tests in several rooms share: the full-logits KL that the position-only KL must
equal, a tiny tokenized batch, the tiny model loaded for a step, and that batch through the loop's collate."""

import torch
import torch.nn.functional as F

from retain.objectives.sft import collate_indexed


def full_kl(student, teacher, mask, temperature=1.0, direction="forward"):
    """The reference: log-softmax over every (B, T) position, per-position KL, mean over the mask."""
    s = F.log_softmax(student.double() / temperature, -1)
    t = F.log_softmax(teacher.double() / temperature, -1)
    p, q = (t, s) if direction == "forward" else (s, t)
    per_position = (p.exp() * (p - q)).sum(-1)  # (B, T)
    return (per_position * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


def full_top_k_kl(student, ids, logprobs, mask, temperature=1.0):
    s = F.log_softmax(student.double().gather(-1, ids) / temperature, -1)
    t = F.log_softmax(logprobs.double() / temperature, -1)
    per_position = (t.exp() * (t - s)).sum(-1)
    return (per_position * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


def tiny_batch(tokenizer, index=None):
    from retain.data import collate, tokenize
    from retain.data.tokens import Example

    texts = ["the capital of france is paris", "one plus two is three", "what city", "red green blue river"]
    examples = []
    for n, text in enumerate(texts):
        e = tokenize(text, [(len(text) // 2, len(text))], tokenizer, "response")
        examples.append(Example(e.input_ids, e.labels, replay=n % 2 == 1))
    batch = collate(examples, tokenizer.pad_token_id)
    if index is not None:
        batch["index"] = index
    return batch


def loaded(tiny_model, prompt_tuning=False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    if prompt_tuning:
        from peft import PromptTuningConfig, get_peft_model

        model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    return model.train(), AutoTokenizer.from_pretrained(tiny_model)


def indexed(tokenizer, index=(3, 1, 4, 0)):
    """tiny_batch's examples through the loop's collate (target_rows, index)."""
    from retain.data.tokens import Example

    plain = tiny_batch(tokenizer)
    examples = [Example([int(t) for t, m in zip(ids, mask) if m], [int(x) for x, m in zip(labels, mask) if m],
                        bool(replay))
                for ids, mask, labels, replay in zip(plain["input_ids"], plain["attention_mask"], plain["labels"],
                                                     plain["replay"])]
    return collate_indexed(list(zip(index, examples)), tokenizer.pad_token_id)

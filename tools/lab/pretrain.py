"""Pretrain `retain-tiny` from scratch on the lab corpus: tokenizer, model, and a plain loop.

    python -m tools.lab pretrain --out retain/lab/model --steps 2400 --seed 0

The loop is deliberately plain PyTorch (documents packed into fixed-length rows, AdamW,
warmup + cosine): pretraining is not what retain is for, and a reader should be able to
check every line of how the base model came to be. Deterministic from the seed on CPU.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

# Newlines are written as expressions: transformers renders with trim_blocks, which eats a
# literal newline that follows a block tag.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE with single-digit numbers (so addition is learnable digit by digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|pad|>", unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=1,
    )
    return LlamaForCausalLM(config)


def packed_rows(token_docs: list[list[int]], seq_len: int, eos_id: int, rng: random.Random) -> torch.Tensor:
    """Shuffle documents, join them with EOS, and cut into rows: (N, seq_len)."""
    order = list(range(len(token_docs)))
    rng.shuffle(order)
    stream = [eos_id]
    for i in order:
        stream += token_docs[i] + [eos_id]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def pretrain(corpus: Path, out: Path, steps: int = 2400, seed: int = 0, batch_size: int = 16,
             seq_len: int = 128, lr: float = 1e-3, vocab_size: int = 4096) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    tokenizer = train_tokenizer(texts, vocab_size)
    model = build_model(len(tokenizer), seed)
    token_docs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine down to 10% of the peak
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    rng = random.Random(seed)
    rows, cursor = packed_rows(token_docs, seq_len, tokenizer.eos_token_id, rng), 0
    model.train()
    start, losses = time.time(), []
    bar = tqdm(range(steps), desc="pretrain", dynamic_ncols=True)
    for step in bar:
        if cursor + batch_size > len(rows):  # new epoch: a fresh shuffle and packing
            rows, cursor = packed_rows(token_docs, seq_len, tokenizer.eos_token_id, rng), 0
        batch = rows[cursor: cursor + batch_size]  # (B, T)
        cursor += batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {
        "steps": steps, "seed": seed, "batch_size": batch_size, "seq_len": seq_len, "lr": lr,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]), "seconds": round(time.time() - start),
    }
    (out / "pretrain_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info

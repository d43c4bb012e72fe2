"""A causal LM as the evaluation needs it: three request types, batched by length.

    loglikelihood([(context, continuation)])  -> [(logprob of continuation, is_greedy)]
    loglikelihood_rolling([text])             -> [(logprob of the whole text, n_tokens)]
    generate_until([(context, until, max_new_tokens)]) -> [text]

Tokenization and windowing follow lm-evaluation-harness's HF backend exactly, so scores agree
with it on the same model and data: trailing spaces of a context move to the continuation;
the continuation's tokens are those of encode(context + continuation) past encode(context);
an empty context is replaced by the prefix token (BOS, else EOS); documents are scored in
disjoint windows of at most max_length tokens, the first conditioned on the prefix token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MAX_LENGTH = 2048


def model_max_length(model, tokenizer) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    if tokenizer.model_max_length and tokenizer.model_max_length < 1e9:
        return int(tokenizer.model_max_length)
    return DEFAULT_MAX_LENGTH


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int):
    """(ids, n) pieces that score every token of `tokens` exactly once; see LM._score.

    The first piece predicts tokens[0:L] from [prefix] + tokens[0:L-1]; each later piece predicts
    the next (up to L) tokens, conditioned on as many preceding tokens as fit in L.
    """
    if not tokens:
        return
    first = min(max_length, len(tokens))
    yield [prefix_token] + tokens[:first], first
    done = first
    while done < len(tokens):
        end = min(len(tokens), done + max_length)
        yield tokens[end - max_length - 1: end], end - done
        done = end


class LM:
    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        bos = tokenizer.bos_token_id
        self.prefix_token = bos if bos is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]  # with the tokenizer's own special tokens, as lm-eval

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.prefix_token], self.encode(continuation)
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        n_context = len(self.encode(context))
        return whole[:n_context], whole[n_context:]

    @torch.no_grad()
    def _score(self, pieces: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """For each (ids, n): the logprob of ids[-n:] given what precedes them, and whether it is greedy.

        The model reads ids[:-1] (at most max_length of them); batches go longest first so they pad little.
        """
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][0]))
        results: list[tuple[float, bool] | None] = [None] * len(pieces)
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            rows = [pieces[i][0][-(self.max_length + 1):] for i in idx]
            width = max(len(r) - 1 for r in rows)
            # Right padding needs no attention mask for a causal model: pads come after every scored position.
            inputs = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                inputs[j, : len(r) - 1] = torch.tensor(r[:-1])
            logits = self.model(inputs.to(self.device)).logits[:, -width:]  # prompt tuning prepends positions
            logprobs = F.log_softmax(logits.float(), dim=-1).cpu()  # (B, T, V)
            for j, (i, r) in enumerate(zip(idx, rows)):
                n = pieces[i][1]
                targets = torch.tensor(r[-n:])
                lp = logprobs[j, len(r) - 1 - n: len(r) - 1]  # (n, V): the positions that predict the targets
                results[i] = (lp.gather(1, targets[:, None]).sum().item(), bool((lp.argmax(-1) == targets).all()))
        return results

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        pieces = []
        for context, continuation in requests:
            ctx, cont = self.encode_pair(context, continuation)
            pieces.append((ctx + cont, len(cont)))
        return self._score(pieces)

    def loglikelihood_rolling(self, texts: list[str]) -> list[tuple[float, int]]:
        pieces, owner, n_tokens = [], [], []
        for k, text in enumerate(texts):
            tokens = self.encode(text)
            n_tokens.append(len(tokens))
            for piece in rolling_windows(tokens, self.prefix_token, self.max_length):
                pieces.append(piece)
                owner.append(k)
        totals = [0.0] * len(texts)
        for k, (ll, _) in zip(owner, self._score(pieces)):
            totals[k] += ll
        return list(zip(totals, n_tokens))

    @torch.no_grad()
    def generate_until(self, requests: list[tuple[str, tuple[str, ...], int]], sample: bool = False,
                       temperature: float = 1.0, seed: int = 0) -> list[str]:
        """Greedy (or sampled) continuations, cut at the first stop string; batched, left-padded."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.prefix_token
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
        outputs: list[str | None] = [None] * len(requests)
        generator_seed = seed
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            encoded = [self.encode(requests[i][0]) or [self.prefix_token] for i in idx]
            max_new = max(requests[i][2] for i in idx)
            encoded = [e[-(self.max_length - max_new):] for e in encoded]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, e in enumerate(encoded):
                ids[j, width - len(e):] = torch.tensor(e)
                mask[j, width - len(e):] = 1
            # Sampling is seeded per batch, inside fork_rng so that an evaluation during training
            # leaves the training RNG (dropout, resume) exactly as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(generator_seed)
                generator_seed += 1
                generated = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new,
                    do_sample=sample, temperature=temperature if sample else None, top_p=None, top_k=None,
                    pad_token_id=pad)
            for j, i in enumerate(idx):
                text = self.tokenizer.decode(generated[j, width:], skip_special_tokens=True)
                for stop in requests[i][1]:
                    text = text.split(stop)[0] if stop else text
                outputs[i] = text
        return outputs


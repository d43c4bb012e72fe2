"""A causal LM as the evaluation needs it: three request types, batched by length.

    loglikelihood([(context, continuation)])  -> [(logprob of continuation, is_greedy)]
    loglikelihood_rolling([text])             -> [(logprob of the whole text, n_tokens)]
    generate_until([(context, until, max_new_tokens)]) -> [text]

Tokenization and windowing follow lm-evaluation-harness's HF backend (0.4.x) exactly, so scores
agree with it on the same model and data, whatever the tokenizer does about BOS:
  - text is encoded with the tokenizer's own special tokens (a Llama/Gemma tokenizer adds BOS,
    a GPT-2/Qwen one does not), except when the text already starts with the BOS string (a
    chat template that writes it): then nothing is added, so BOS is never doubled there;
  - trailing spaces of a context move to the continuation; the continuation's tokens are those
    of encode(context + continuation) past encode(context); an empty context is replaced by the
    prefix token (BOS, else EOS);
  - documents are scored in disjoint windows of at most max_length tokens, the first one
    conditioned on the prefix token. With a tokenizer that adds BOS itself this charges every
    document log p(BOS | BOS) — lm-eval does exactly that. `rolling_bos="single"` drops the
    tokenizer's BOS so each document is conditioned on one BOS and only its own tokens are scored.

Speed without changing a score: requests that share a context and continue it by one token (every
MMLU-style letter choice) are scored from one forward pass of the context; contexts that start with
the same tokens (few-shot prompts: a task's description and worked examples before every question)
run those tokens once and score every question on their cached keys and values; log-probabilities
are taken and gathered on the model's device, and only the per-request sums come back to the host —
never the (batch, tokens, vocab) tensor.
"""

from __future__ import annotations

import copy
import inspect
from typing import Iterator, Literal

import torch

DEFAULT_MAX_LENGTH = 2048
LOGIT_CHUNK_ELEMENTS = 1 << 26  # log-softmax over at most this many logits at once (256 MB in fp32)
# A shared start shorter than this is run again with each context: copying its keys and values into
# every batch would cost about what it saves (a 0-shot MMLU subject line is ~15 tokens; 5 shots are hundreds).
MIN_SHARED_PREFIX = 32


def model_max_length(model, tokenizer) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    if tokenizer.model_max_length and tokenizer.model_max_length < 1e9:
        return int(tokenizer.model_max_length)
    return DEFAULT_MAX_LENGTH


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int):
    """(ids, n) pieces that score every token of `tokens` exactly once.

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


def common_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many first tokens a and b have in common."""
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def shared_prefixes(contexts: list[tuple[int, ...]], min_shared: int = MIN_SHARED_PREFIX
                    ) -> list[tuple[int, list[int]]]:
    """(prefix length, indices into contexts) for groups of two or more contexts that start with the same
    `prefix length` >= min_shared tokens; a context is in at most one group, most are usually in none.

    Contexts are taken in lexicographic order, so those with a long common start are neighbours. A context
    joins the current group when it shares at least min_shared tokens with the group's common start, does
    not cut that start by more than half, and shares no more than twice as much with the context after it
    (else it starts a group of its own with that one): one context with only a header in common must not
    take a long cached prefix away from the others, before or after them. The prefix stops one token short
    of the group's shortest context, so that every context keeps its last token to run.
    """
    order = sorted(range(len(contexts)), key=contexts.__getitem__)
    groups, members, common = [], [], 0

    def close() -> None:
        n_prefix = min([common] + [len(contexts[i]) - 1 for i in members])
        if len(members) > 1 and n_prefix >= min_shared:
            groups.append((n_prefix, members))

    for k, i in enumerate(order):
        if members:
            shared = common_length(contexts[members[0]][:common], contexts[i])
            with_next = common_length(contexts[i], contexts[order[k + 1]]) if k + 1 < len(order) else 0
            if shared >= min_shared and (len(members) == 1 or 2 * shared >= common) and 2 * shared >= with_next:
                members.append(i)
                common = shared
                continue
            close()
        members, common = [i], len(contexts[i])
    if members:
        close()
    return groups


# A query asks for the summed log-probability of `tokens` predicted at row positions start, start+1, ...
Query = tuple[int, list[int]]


class LM:
    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int | None = None,
                 rolling_bos: Literal["lm-eval", "single"] = "lm-eval", share_context: bool = True):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        self.rolling_bos = rolling_bos
        bos = tokenizer.bos_token_id
        self.prefix_token = bos if bos is not None else tokenizer.eos_token_id
        self.prefix_text = tokenizer.decode([self.prefix_token]) if self.prefix_token is not None else None
        # transformers' causal LMs: logits only where scored, and a reusable KV cache for shared contexts
        parameters = inspect.signature(model.forward).parameters
        self.keeps_logits = "logits_to_keep" in parameters
        self.cache_arg = "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5.24
        self.shares_cache = self.keeps_logits and share_context

    def encode(self, text: str) -> list[int]:
        """Token ids with the tokenizer's own special tokens, unless the text starts with BOS already."""
        already = bool(self.prefix_text) and text.startswith(self.prefix_text)
        return self.tokenizer(text, add_special_tokens=not already)["input_ids"]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.prefix_token], self.encode(continuation)
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        n_context = len(self.encode(context))
        return whole[:n_context], whole[n_context:]

    def _batches(self, rows: list[list[int]], queries: list[list[Query]], prefix: list[int] | None = None
                 ) -> Iterator[tuple[list[int], torch.Tensor, dict[int, int]]]:
        """(row indices, logits (B, P, V) on the device, sequence position -> index in P) per batch.

        Batches are right-padded, longest rows first; right padding needs no attention mask for a
        causal model (pads come after every position read). Where the model takes `logits_to_keep`
        (transformers' causal LMs), only the P positions some query of the batch scores get logits:
        one per row for a letter choice instead of the whole (B, T, V) tensor.
        With `prefix` (needs `logits_to_keep`), every row continues those tokens: they run once, and each
        batch runs on a copy of their keys and values repeated once per row.
        """
        prefix_cache = None
        if prefix:
            prefix_cache = self.model(torch.tensor([prefix], device=self.device), use_cache=True,
                                      logits_to_keep=1)[self.cache_arg]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            width = max(len(rows[i]) for i in idx)
            inputs = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                inputs[j, : len(rows[i])] = torch.tensor(rows[i])
            inputs = inputs.to(self.device)
            if self.keeps_logits:
                keep = sorted({first + k for i in idx for first, tokens in queries[i] for k in range(len(tokens))})
                cache = None
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)  # the forward pass appends the rows' keys to it
                    cache.batch_repeat_interleave(len(idx))
                logits = self.model(inputs, **{self.cache_arg: cache}, use_cache=cache is not None,
                                    logits_to_keep=torch.tensor(keep, device=self.device)).logits
                yield idx, logits, {p: k for k, p in enumerate(keep)}
            else:
                logits = self.model(inputs).logits[:, -width:]  # prompt tuning prepends positions
                yield idx, logits, {p: p for p in range(width)}

    @staticmethod
    def _sum_logprobs(logits: torch.Tensor, row: list[int], position: list[int], token: list[int], owner: list[int],
                      n_owners: int) -> tuple[list[float], list[bool]]:
        """Σ log p(token | logits[row, position]) per owner, and whether every token was the argmax.

        logits: (B, T, V) on the device. Log-softmax runs over (chunk, V) slices of the picked positions
        only, in float32 (float64 sums), so memory stays bounded on any vocabulary.
        """
        dev = logits.device
        b, p = torch.tensor(row, device=dev), torch.tensor(position, device=dev)
        t, o = torch.tensor(token, device=dev), torch.tensor(owner, device=dev)
        logprob = torch.empty(len(t), dtype=torch.float64, device=dev)
        greedy = torch.empty(len(t), dtype=torch.bool, device=dev)
        chunk = max(1, LOGIT_CHUNK_ELEMENTS // logits.shape[-1])
        for s in range(0, len(t), chunk):
            picked = logits[b[s: s + chunk], p[s: s + chunk]].float()  # (chunk, V)
            logprob[s: s + chunk] = (picked.gather(1, t[s: s + chunk, None])[:, 0]
                                     - torch.logsumexp(picked, dim=-1)).double()
            greedy[s: s + chunk] = picked.argmax(-1) == t[s: s + chunk]
        totals = torch.zeros(n_owners, dtype=torch.float64, device=dev).index_add_(0, o, logprob)
        misses = torch.zeros(n_owners, dtype=torch.long, device=dev).index_add_(0, o, (~greedy).long())
        return totals.tolist(), [m == 0 for m in misses.tolist()]

    @torch.no_grad()
    def _answer(self, rows: list[list[int]], queries: list[list[Query]], prefix: list[int] | None = None
                ) -> list[list[tuple[float, bool]]]:
        """For each row (the ids the model reads after `prefix`) and each of its queries: (logprob, all tokens
        greedy). Query positions count from the row's first token."""
        answers: list[list[tuple[float, bool]] | None] = [None] * len(rows)
        for idx, logits, column in self._batches(rows, queries, prefix):
            # Flatten every (row, position, token) of every query of the batch into index tensors.
            batch_row, position, token, owner = [], [], [], []
            for j, i in enumerate(idx):
                for q, (start, tokens) in enumerate(queries[i]):
                    for k, t in enumerate(tokens):
                        batch_row.append(j), position.append(column[start + k]), token.append(t), owner.append((i, q))
            keys = sorted(set(owner))
            slot = {key: s for s, key in enumerate(keys)}
            totals, greedy = self._sum_logprobs(logits, batch_row, position, token, [slot[x] for x in owner], len(keys))
            for (i, q), total, all_greedy in zip(keys, totals, greedy):
                if answers[i] is None:
                    answers[i] = [None] * len(queries[i])
                answers[i][q] = (total, all_greedy)
        return answers

    def _score(self, pieces: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """For each (ids, n): the logprob of ids[-n:] given what precedes them, and whether it is greedy."""
        rows = [ids[-(self.max_length + 1):][:-1] for ids, _ in pieces]
        queries = [[(len(row) - n, ids[-n:])] for row, (ids, n) in zip(rows, pieces)]
        return [a[0] for a in self._answer(rows, queries)]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Requests that share a context share one forward pass of it (multiple choice): continuations of
        one token are read off its last position; longer ones run on its cached keys and values. Contexts
        that start alike (few-shot prompts) run their common start once (`shared_prefixes`)."""
        pairs = [self.encode_pair(context, continuation) for context, continuation in requests]
        by_context: dict[tuple[int, ...], list[int]] = {}
        for r, (ctx, _) in enumerate(pairs):
            by_context.setdefault(tuple(ctx), []).append(r)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        if self.shares_cache:
            self._score_on_shared_prefixes(pairs, by_context, results)  # removes the contexts it scores
        single, cached, plain = [], [], []
        for ctx, group in by_context.items():
            longest = max(len(pairs[r][1]) for r in group)
            if longest == 1:
                single.append(ctx)
            elif self.shares_cache and len(group) > 1 and len(ctx) + longest <= self.max_length:
                cached.append(ctx)
            else:
                plain.extend(group)
        for r, answer in zip(plain, self._score([(pairs[r][0] + pairs[r][1], len(pairs[r][1])) for r in plain])):
            results[r] = answer
        queries = [[(len(ctx[-self.max_length:]) - 1, pairs[r][1]) for r in by_context[ctx]] for ctx in single]
        for ctx, answers in zip(single, self._answer([list(ctx[-self.max_length:]) for ctx in single], queries)):
            for r, answer in zip(by_context[ctx], answers):
                results[r] = answer
        groups = [(list(ctx), [pairs[r][1] for r in by_context[ctx]]) for ctx in cached]
        for ctx, answers in zip(cached, self._score_on_shared_context(groups)):
            for r, answer in zip(by_context[ctx], answers):
                results[r] = answer
        return results

    def _score_on_shared_prefixes(self, pairs: list[tuple[list[int], list[int]]],
                                  by_context: dict[tuple[int, ...], list[int]], results: list) -> None:
        """Score the requests whose contexts share a prefix on that prefix's cache; drop their contexts from
        `by_context`. Only contexts scored whole, without truncation, take part, so no score changes."""
        fits = [ctx for ctx, group in by_context.items()
                if len(ctx) + max(len(pairs[r][1]) for r in group) - 1 <= self.max_length]
        for n_prefix, members in shared_prefixes(fits):
            rows, queries, owners = [], [], []
            for ctx in (fits[m] for m in members):
                group = by_context.pop(ctx)
                last = len(ctx) - n_prefix - 1  # the row position that predicts a continuation's first token
                if all(len(pairs[r][1]) == 1 for r in group):  # letter choices: one row, read at its end
                    rows.append(list(ctx[n_prefix:]))
                    queries.append([(last, pairs[r][1]) for r in group])
                    owners.append(group)
                else:
                    for r in group:
                        rows.append(list(ctx[n_prefix:]) + pairs[r][1][:-1])
                        queries.append([(last, pairs[r][1])])
                        owners.append([r])
            for group, answers in zip(owners, self._answer(rows, queries, prefix=list(fits[members[0]][:n_prefix]))):
                for r, answer in zip(group, answers):
                    results[r] = answer

    @torch.no_grad()
    def _score_on_shared_context(self, groups: list[tuple[list[int], list[list[int]]]]
                                 ) -> list[list[tuple[float, bool]]]:
        """For each (context, continuations): every continuation's (logprob, greedy), the context run once.

        A batch's contexts run left-padded with a KV cache (positions counted from each one's first
        real token); the cache rows are repeated once per continuation, and the continuations (minus
        their last token, right-padded) run on top. Token 0 of a continuation is predicted by its
        context's last position, token k > 0 by the continuation's position k - 1.
        """
        answers: list[list[tuple[float, bool]] | None] = [None] * len(groups)
        if not groups:
            return answers
        order = sorted(range(len(groups)), key=lambda g: -len(groups[g][0]))
        per_batch = max(1, self.batch_size // max(len(conts) for _, conts in groups))
        for start in range(0, len(order), per_batch):
            idx = order[start: start + per_batch]
            width = max(len(groups[g][0]) for g in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, g in enumerate(idx):
                ctx = groups[g][0]
                ids[j, width - len(ctx):], mask[j, width - len(ctx):] = torch.tensor(ctx), 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            first = self.model(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               use_cache=True, logits_to_keep=1)
            owner = [j for j, g in enumerate(idx) for _ in groups[g][1]]  # cache row of each continuation
            conts = [c for g in idx for c in groups[g][1]]
            tail = max(len(c) for c in conts) - 1
            cont_ids = torch.zeros((len(conts), tail), dtype=torch.long)
            cont_mask = torch.zeros((len(conts), tail), dtype=torch.long)
            for k, c in enumerate(conts):
                cont_ids[k, : len(c) - 1], cont_mask[k, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long), 1
            rows = torch.tensor(owner, device=self.device)
            cache = first[self.cache_arg]
            cache.batch_select_indices(rows)
            positions = mask.sum(-1)[rows, None] + torch.arange(tail, device=self.device)
            rest = self.model(cont_ids.to(self.device), attention_mask=torch.cat([mask[rows], cont_mask.to(self.device)], 1),
                              position_ids=positions, **{self.cache_arg: cache}).logits  # (R, tail, V)
            logits = torch.cat([first.logits[rows], rest], dim=1)  # (R, 1 + tail, V): position k predicts token k
            flat = [(k, i, t) for k, c in enumerate(conts) for i, t in enumerate(c)]
            totals, greedy = self._sum_logprobs(logits, [k for k, _, _ in flat], [i for _, i, _ in flat],
                                                [t for _, _, t in flat], [k for k, _, _ in flat], len(conts))
            k = 0
            for g in idx:
                n = len(groups[g][1])
                answers[g] = list(zip(totals[k: k + n], greedy[k: k + n]))
                k += n
        return answers

    def rolling_tokens(self, text: str) -> list[int]:
        tokens = self.encode(text)
        if self.rolling_bos == "single" and tokens and tokens[0] == self.tokenizer.bos_token_id:
            tokens = tokens[1:]  # the window's prefix token is the document's one BOS
        return tokens

    def loglikelihood_rolling(self, texts: list[str]) -> list[tuple[float, int]]:
        pieces, owner, n_tokens = [], [], []
        for k, text in enumerate(texts):
            tokens = self.rolling_tokens(text)
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

"""The step's shortcuts change nothing but time: logits at the targets only, KL on them, metrics appended."""

import json

import pytest
import torch
import torch.nn.functional as F
from batches import full_kl, full_top_k_kl, indexed, loaded

from retain.mitigations.distill import KLOptions, KLToBase, positions
from retain.training.metrics_log import MetricsLog, read_rows
from retain.objectives.sft import task_forward


def test_collate_finds_the_target_rows_on_the_host(tiny_model):
    _, tokenizer = loaded(tiny_model)
    batch = indexed(tokenizer)
    width = batch["labels"].shape[1]
    want = [b * width + t for b in range(4) for t in range(width - 1) if batch["labels"][b, t + 1] != -100]
    assert batch["target_rows"].tolist() == want
    assert batch["index"] == (3, 1, 4, 0)


@pytest.mark.parametrize("prompt_tuning", [False, True], ids=["plain", "prompt-tuning"])
def test_the_loss_at_the_targets_equals_the_models_own(tiny_model, prompt_tuning):
    model, tokenizer = loaded(tiny_model, prompt_tuning)
    batch = indexed(tokenizer)
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    own_grads = torch.autograd.grad(own.loss, [p for p in model.parameters() if p.requires_grad])
    fast = task_forward(model, model, batch)
    assert fast.logits.shape == (len(batch["target_rows"]), own.logits.shape[-1])  # no (B, T, V) logits
    fast_grads = torch.autograd.grad(fast.loss, [p for p in model.parameters() if p.requires_grad])
    assert fast.loss.item() == pytest.approx(own.loss.item(), rel=1e-5)
    for a, b in zip(fast_grads, own_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("options", [{"apply_to": "all"}, {"apply_to": "task", "direction": "reverse"},
                                     {"apply_to": "replay", "temperature": 2.0},
                                     {"apply_to": "task", "cache_top_k": 5}])
def test_kl_on_the_logits_at_the_targets_equals_the_full_logits_kl(tiny_model, options):
    from transformers import AutoModelForCausalLM

    model, tokenizer = loaded(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    kl = KLToBase(KLOptions(weight=1.0, **options))
    kl.setup(model, None)
    with torch.no_grad():  # the student moves away from its frozen copy
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    o = kl.options
    for _ in range(2):  # first sight of the examples, then known counts (and the cache)
        batch = indexed(tokenizer)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        with torch.no_grad():
            base_logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mask = positions(batch, o.apply_to)
        if o.cache_top_k:
            top = F.log_softmax(base_logits, -1).topk(o.cache_top_k)
            want = full_top_k_kl(full, top.indices, top.values, mask, o.temperature)
        else:
            want = full_kl(full, base_logits, mask, o.temperature, o.direction)
        want_grads = torch.autograd.grad(want, list(model.parameters()))
        fast = task_forward(model, model, batch)
        got = kl.loss_term(model, batch, fast)
        got_grads = torch.autograd.grad(got, list(model.parameters()))
        assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-7)
        for a, b in zip(got_grads, want_grads):
            torch.testing.assert_close(a, b.float(), rtol=1e-3, atol=1e-6)
    # apply_to all: the KL's rows are the targets' own, nothing to count; else counted once, then known
    assert set(kl.counts) == (set() if o.apply_to == "all" else {0, 1, 3, 4})


class _Accelerator:
    is_main_process = True

    def init_trackers(self, *args, **kwargs):
        pass

    def log(self, *args, **kwargs):
        pass

    def end_training(self):
        pass


def test_metrics_rows_are_appended_and_a_torn_last_line_is_dropped_on_resume(tmp_path):
    log = MetricsLog(tmp_path, _Accelerator(), {})
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    log.close()
    path = tmp_path / "metrics.jsonl"
    assert [r["step"] for r in read_rows(path)] == [1, 2, 3]
    with path.open("a") as f:
        f.write('{"step": 4, "lo')  # an append cut short
    assert [r["step"] for r in read_rows(path)] == [1, 2, 3]
    resumed = MetricsLog(tmp_path, _Accelerator(), {})
    resumed.truncate_after(2)
    resumed.write({"step": 3, "loss": 0.5})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert path.read_text().endswith("\n")


def test_a_full_disk_while_logging_names_the_metrics_file_and_leaves_whole_lines(tmp_path, monkeypatch):
    import errno
    import os

    log = MetricsLog(tmp_path, _Accelerator(), {})
    log.write({"step": 1, "loss": 1.0})
    real_write = os.write

    def short_write(fd, data):  # half the row fits, then the disk is full
        if len(data) > 8:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(OSError) as error:
        log.write({"step": 2, "loss": 0.5})
    monkeypatch.setattr(os, "write", real_write)
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in read_rows(tmp_path / "metrics.jsonl")] == [1]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")


@pytest.mark.parametrize("options", [{"apply_to": "task"}, {"apply_to": "replay", "cache_top_k": 5},
                                     {"apply_to": "all", "cache_top_k": 5}])
def test_a_batch_of_seen_examples_reads_nothing_back_from_the_device(tiny_model, options, monkeypatch):
    model, tokenizer = loaded(tiny_model)
    kl = KLToBase(KLOptions(weight=1.0, **options))
    kl.setup(model, None)
    with torch.no_grad():  # the student moves away from its frozen copy
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = indexed(tokenizer)
    kl.loss_term(model, batch, task_forward(model, model, batch))  # first sight: counts (and the cache) filled
    batch = indexed(tokenizer)  # the loop's collate, on the host, before anything reaches the device

    def host_sync(*args, **kwargs):
        raise AssertionError("read back from the device")

    for name in ("nonzero", "tolist", "item"):  # what asks the device for a value or a size
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    monkeypatch.setattr(torch, "nonzero", host_sync)
    value = kl.loss_term(model, batch, task_forward(model, model, batch))
    value.backward()
    monkeypatch.undo()
    assert value.item() > 1e-4

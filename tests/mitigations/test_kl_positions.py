"""KL to the base computed at the target positions only equals the KL over the full (B, T, V) logits."""

import pytest
import torch
import torch.nn.functional as F

from batches import full_kl, full_top_k_kl, tiny_batch

from retain.mitigations import distill
from retain.mitigations.distill import KLOptions, KLToBase, kl_divergence, positions, top_k_kl


def a_batch(vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (4, 9), generator=g)
    labels[:, :3] = -100  # prompts
    labels[2, 6:] = -100  # padding
    return {"labels": labels, "replay": torch.tensor([False, True, False, True]),
            "input_ids": labels.clamp(min=0), "attention_mask": (labels != -100).long()}


def value_and_grad(fn, student):
    student = student.clone().requires_grad_(True)
    value = fn(student)
    value.backward()
    return value.detach().double(), student.grad


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("apply_to", ["task", "replay", "all"])
@pytest.mark.parametrize("chunk", [64, 3])  # one chunk, and chunks of 3 rows
def test_kl_at_positions_equals_the_full_logits_kl(direction, temperature, apply_to, chunk, monkeypatch):
    monkeypatch.setattr(distill, "CHUNK_ELEMENTS", {"cpu": 0})
    monkeypatch.setattr(distill, "CHUNK_MIN_ROWS", chunk)
    batch = a_batch()
    student, teacher = torch.randn(4, 9, 50) * 3, torch.randn(4, 9, 50) * 3
    mask = positions(batch, apply_to)
    got, got_grad = value_and_grad(lambda s: kl_divergence(s, teacher, mask, temperature, direction), student)
    want, want_grad = value_and_grad(lambda s: full_kl(s, teacher, mask, temperature, direction), student)
    assert got == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(got_grad, want_grad.float(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("apply_to", ["task", "all"])
def test_top_k_kl_at_positions_equals_the_full_logits_one(apply_to):
    batch = a_batch()
    student, teacher = torch.randn(4, 9, 50) * 3, torch.randn(4, 9, 50) * 3
    top = F.log_softmax(teacher, -1).topk(6)
    mask = positions(batch, apply_to)
    got, got_grad = value_and_grad(lambda s: top_k_kl(s, top.indices, top.values, mask, 2.0), student)
    want, want_grad = value_and_grad(lambda s: full_top_k_kl(s, top.indices, top.values, mask, 2.0), student)
    assert got == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(got_grad, want_grad.float(), rtol=1e-4, atol=1e-7)


def test_a_teacher_that_learns_still_gets_its_gradient():
    batch = a_batch()
    teacher = torch.randn(4, 9, 50, requires_grad=True)
    kl_divergence(torch.randn(4, 9, 50), teacher, positions(batch, "all")).backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0


def student_and_base(tiny_model, peft: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    if peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model, base, AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("peft", [False, True], ids=["frozen-copy", "adapters-disabled"])
@pytest.mark.parametrize("options", [{"direction": "reverse", "temperature": 2.0, "apply_to": "task"},
                                     {"apply_to": "all"}, {"cache_top_k": 5, "apply_to": "replay"}],
                         ids=["reverse-task", "forward-all", "cached-replay"])
def test_the_loop_term_equals_the_full_logits_kl(tiny_model, peft, options):
    model, base, tokenizer = student_and_base(tiny_model, peft)
    kl = KLToBase(KLOptions(weight=1.0, **options))
    kl.setup(model, None)
    if not peft:  # make the student differ from its frozen copy
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    teacher_forwards = []
    head = (kl.reference.copy or model).get_output_embeddings()
    head.register_forward_hook(lambda m, i, out: teacher_forwards.append(out.shape))
    o = kl.options
    for index in (None, (3, 1, 4, 0), (3, 1, 4, 0)):  # no index; first sight (syncs); seen (static size)
        batch = tiny_batch(tokenizer, index)
        model.train()
        outputs = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
        mask = positions(batch, o.apply_to)
        with torch.no_grad():
            base_logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if o.cache_top_k:
            top = F.log_softmax(base_logits, -1).topk(o.cache_top_k)
            want_fn = lambda s: full_top_k_kl(s, top.indices, top.values, mask, o.temperature)  # noqa: E731
        else:
            want_fn = lambda s: full_kl(s, base_logits, mask, o.temperature, o.direction)  # noqa: E731
        logits = outputs.logits
        got = kl.loss_term(model, batch, outputs)
        got_grad, = torch.autograd.grad(got, logits)
        want, want_grad = value_and_grad(want_fn, logits.detach())
        assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-7)
        torch.testing.assert_close(got_grad, want_grad.float(), rtol=1e-3, atol=1e-6)
    n_rows = int(positions(tiny_batch(tokenizer), o.apply_to).sum())
    # the base's LM head ran on the KL positions only; the cache filled once, by example index
    expected = 2 if o.cache_top_k else 3
    if peft:  # under PEFT the student's own forwards go through the same head
        teacher_forwards = [s for s in teacher_forwards if len(s) == 2]
    assert teacher_forwards == [torch.Size([n_rows, base_logits.shape[-1]])] * expected


def test_chunk_rows_keep_cpu_temporaries_small_and_gpu_chunks_large():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object only: nothing runs on the GPU
    assert distill._chunk_rows(4096, cpu) == 64  # 1 MB float32 temporaries of a 4k vocabulary
    assert distill._chunk_rows(4096, gpu) == 4096  # 64 MB on a GPU
    assert distill._chunk_rows(131072, cpu) == distill.CHUNK_MIN_ROWS  # a 128k vocabulary: never fewer rows
    assert distill._chunk_rows(131072, gpu) == 128

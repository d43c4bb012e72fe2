"""training.bf16: auto picks bf16 only where the hardware does it natively; true and false are obeyed."""

import pytest

from retain.config import config_from_dict
from retain.core.schema import ConfigError
from retain.model.precision import Hardware, choose_bf16, cpu_flags, describe_precision

AVX2_ONLY = Hardware("cpu", False, frozenset({"sse4_2", "avx2", "fma"}))
AVX512_BF16 = Hardware("cpu", False, frozenset({"avx2", "avx512f", "avx512_bf16"}))
AMX = Hardware("cpu", False, frozenset({"avx2", "amx_tile", "amx_bf16"}))
AMPERE = Hardware("cuda", True, frozenset())
VOLTA = Hardware("cuda", False, frozenset())


@pytest.mark.parametrize("hardware, expected", [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True),
                                                (AMPERE, True), (VOLTA, False)])
def test_auto_follows_the_hardware(hardware, expected):
    assert choose_bf16("auto", hardware) is expected


@pytest.mark.parametrize("hardware", [AVX2_ONLY, AMX, AMPERE, VOLTA])
def test_true_and_false_are_obeyed_whatever_the_hardware(hardware):
    assert choose_bf16(True, hardware) is True
    assert choose_bf16(False, hardware) is False


def test_forcing_bf16_onto_emulation_is_said_and_auto_says_what_it_picked():
    assert "emulated" in describe_precision(True, True, AVX2_ONLY)
    assert describe_precision(True, True, AMX) is None
    assert "bf16 autocast" in describe_precision(True, "auto", AMPERE)
    assert describe_precision(False, "auto", AVX2_ONLY) is None  # float32 as everywhere: nothing to say


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # not Linux: no flags, so auto means float32


def test_the_config_key_takes_auto_true_false_and_nothing_else(make_config):
    assert config_from_dict(make_config()).training.bf16 == "auto"  # the default
    for value in ("auto", True, False):
        assert config_from_dict(make_config(training={"bf16": value})).training.bf16 == value
    with pytest.raises(ConfigError, match="bf16"):
        config_from_dict(make_config(training={"bf16": "yes"}))


# --- the precision belongs to the run: several runs of different precision in one process ---

def linear_output_dtypes():
    """Record the dtype of every nn.Linear output computed while the returned list is alive (a global hook)."""
    import torch

    seen: list = []

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            seen.append(output.dtype)

    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


@pytest.mark.parametrize("native", ["0", "1"])
def test_auto_follows_the_injected_hardware_answer(native, monkeypatch):
    from retain.model.precision import this_machine

    monkeypatch.setenv("RETAIN_NATIVE_BF16", native)
    assert choose_bf16("auto", this_machine()) is (native == "1")
    monkeypatch.setenv("RETAIN_NATIVE_BF16", "yes")
    with pytest.raises(ConfigError, match="RETAIN_NATIVE_BF16"):
        this_machine()


def test_runs_of_different_precision_share_one_process(make_config, tiny_model, tmp_path, monkeypatch):
    """float32, bf16, auto (answered both ways), a HF Trainer with retain's callback, float32 again: each
    run computes in the precision its own config asks for (accelerate's state is process-global)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from retain.data import collate, tokenize
    from retain.training.integrations import RetainCallback
    from retain.training.loop import train

    def run(name: str, bf16, native: str = "0") -> set:
        monkeypatch.setenv("RETAIN_NATIVE_BF16", native)
        seen, handle = linear_output_dtypes()
        try:
            config = make_config(training={"bf16": bf16, "max_steps": 2}, output={"dir": str(tmp_path / name)})
            train(config_from_dict(config), progress=False)
        finally:
            handle.remove()
        return set(seen)

    def trainer_run(bf16: bool) -> set:
        model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
        rows = [tokenize(f"what is {a} plus 1 ? {a + 1}", [(0, 14)], tokenizer, "response") for a in range(8)]
        args = TrainingArguments(output_dir=str(tmp_path / f"trainer-{bf16}"), max_steps=2, per_device_train_batch_size=4,
                                 report_to="none", use_cpu=True, save_strategy="no", bf16=bf16)
        trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                          data_collator=lambda b: collate(b, tokenizer.pad_token_id),
                          callbacks=[RetainCallback("english", limit=4, output_dir=tmp_path / f"cb-{bf16}")])
        seen, handle = linear_output_dtypes()
        try:
            trainer.train()
        finally:
            handle.remove()
        return set(seen)

    assert run("fp32", False) == {torch.float32}
    assert run("bf16", True) == {torch.bfloat16}
    assert run("auto-no", "auto", native="0") == {torch.float32}
    assert run("auto-yes", "auto", native="1") == {torch.bfloat16}
    assert trainer_run(bf16=True) == {torch.bfloat16}
    assert run("fp32-after-trainer", False) == {torch.float32}
    assert trainer_run(bf16=False) == {torch.float32}
    assert run("bf16-after-trainer", True) == {torch.bfloat16}

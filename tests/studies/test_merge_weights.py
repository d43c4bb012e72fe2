"""One base model loaded once writes every merge of a sweep's WiSE-FT lines, each from the base's own weights."""

import torch
from safetensors.torch import load_file

from retain.model.weights import interpolate
from retain.studies.merge import BaseWeights


def test_each_merge_starts_from_the_base_weights_not_the_last_merge_written(tiny_model, tmp_path):
    base = BaseWeights(str(tiny_model))
    tuned = {k: v + 1.0 for k, v in base.state.items()}
    base.write(interpolate(base.state, tuned, 1.0), tmp_path / "end")  # loads base+1 into the model
    base.write(interpolate(base.state, tuned, 0.25), tmp_path / "quarter")
    original = load_file(str(tiny_model / "model.safetensors"))
    end, quarter = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("end", "quarter"))
    for k in original:
        assert torch.allclose(end[k], original[k] + 1.0, atol=1e-6), k
        assert torch.allclose(quarter[k], original[k] + 0.25, atol=1e-6), k
    assert (tmp_path / "quarter" / "tokenizer_config.json").is_file()

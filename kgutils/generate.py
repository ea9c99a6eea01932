"""Batched greedy generation of triplet predictions.

Two engines, chosen by :func:`choose_engine` and printed by the notebooks:

* ``hf`` (always available, CPU included): passages are sorted by prompt length so a batch holds prompts of
  similar length (less padding), padded on the left (decoder-only models continue from the right edge) and
  decoded greedily with ``transformers``' ``generate`` and the KV cache;
* ``vllm`` (when the ``vllm`` package of the ``gpu`` extra is installed and a CUDA GPU is present): the prompts go
  to a :class:`VllmModel` (``vllm.LLM``, LoRA adapters through ``LoRARequest``) with greedy ``SamplingParams``;
  vLLM schedules its own batches.

Each finished chunk is appended to the predictions file at once, so an interrupted run resumes where it
stopped; the file is rewritten in input order at the end.

Predictions JSONL, one row a passage (the layout 06 and ``python -m kgutils evaluate`` read)::

    id, text, prompt, gold_parsed, pred_raw,
    pred_parsed     - the card's parse (strip think/fences, json.loads, else []): what the `hgr` metric scores
    parse_status    - the card parse's outcome: ok / empty / invalid_json / not_a_list
    pred_repaired   - kgutils.formats.parse_output's repaired items (prose, truncation, field types)
    repair_status   - its failure category
    n_prompt_tokens, n_new_tokens, model
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .decoding import AnswerGuard, CallGuard, Choices, Grammar, compile_grammar, guard_text, make_guard, schema_text
from .formats import parse_output, parse_spo_output
from .io import progress as progress_bar
from .io import resolve
from .metrics import parse_card_output
from .models import LoadedModel, choose_gpu_option, model_path
from .ontology import ground_titles as ground
from .prompts import extraction_messages, extraction_prompt


def choose_engine(prefer: str = "auto") -> tuple[str, str]:
    """(engine, why): ``vllm`` when the package is installed and a CUDA GPU is present, else ``hf``.

    Raises:
        ValueError: for an unknown engine; RuntimeError: ``vllm`` requested where it cannot run.
    """
    return choose_gpu_option(prefer, name="generation engine", fast="vllm", package="vllm", fallback="hf",
                             fast_label="vLLM", fallback_label="transformers generate, length-sorted batches")


@dataclass
class VllmModel:
    """A vLLM engine in the place of a :class:`~kgutils.models.LoadedModel` for :func:`generate_texts` and
    :func:`predict_file`; ``lora`` is the ``LoRARequest`` applied to every prompt (``None`` for the base model)."""

    llm: Any
    tokenizer: Any
    spec: str
    stop_token_ids: list[int] = field(default_factory=list)
    lora: Any = None
    note: str = ""

    def describe(self) -> str:
        return f"{self.spec} (vLLM{', LoRA ' + self.lora.lora_path if self.lora else ''}) {self.note}".strip()


def load_vllm(
    spec: str,
    adapter_dir: str | Path | None = None,
    *,
    llm: Any = None,
    max_lora_rank: int = 64,
    max_model_len: int = 4096,
    gpu_memory_utilization: float = 0.6,
    seed: int = 0,
) -> VllmModel:
    """A :class:`VllmModel` for a model spec, optionally with a LoRA adapter folder on top.

    Args:
        spec: hub id or folder, ``embedded:NAME`` or ``tiny:ARCH`` (see :func:`kgutils.models.model_path`).
        adapter_dir: a PEFT adapter folder (as :func:`kgutils.train.train_sft` writes), served with LoRA.
        llm: an existing ``vllm.LLM`` of the same base model to reuse (its ``enable_lora`` must be on for an
            adapter): base and fine-tuned predictions then share one engine.
        max_lora_rank / max_model_len / gpu_memory_utilization / seed: ``vllm.LLM`` settings.
    """
    _, why = choose_engine("vllm")  # raises with a clear message where vLLM cannot run
    from transformers import GenerationConfig
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    from .models import stop_ids

    path = model_path(spec)
    if llm is None:
        # Structured outputs pinned to xgrammar without fallback: a schema keyword xgrammar cannot handle is an
        # error, never a silent switch to another engine with other semantics.
        llm = LLM(model=path, enable_lora=True, max_lora_rank=max_lora_rank, max_model_len=max_model_len,
                  gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                  structured_outputs_config={"backend": "xgrammar", "disable_fallback": True,
                                             "disable_any_whitespace": True})
    tok = llm.get_tokenizer()
    lora = None
    if adapter_dir is not None:
        folder = resolve(adapter_dir)
        if not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{folder} has no adapter_config.json: not a LoRA adapter folder")
        lora = LoRARequest("kg-triplets-adapter", 1, str(folder))

    try:  # the checkpoint's own end-of-answer ids, as load_model reads them
        gen_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's EOS and end-of-turn tokens only
        gen_config = GenerationConfig()
    stops = stop_ids(tok, SimpleNamespace(generation_config=gen_config))
    return VllmModel(llm=llm, tokenizer=tok, spec=spec + (" + LoRA" if lora else ""), stop_token_ids=stops,
                     lora=lora, note=why)


def _generate_vllm(
    lm: VllmModel, prompts: Sequence[str], max_new_tokens: int, stop_bias: float = 0.0, progress: bool = True,
    schema: Any = None, guard: bool | str = True,
) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    bias = {t: float(stop_bias) for t in lm.stop_token_ids} if stop_bias else None

    def sampling(one: dict[str, Any] | Choices | None) -> Any:
        extra: dict[str, Any] = {}
        if one is not None:
            from vllm.sampling_params import StructuredOutputsParams

            # The backend (xgrammar, no fallback) is pinned on the engine by load_vllm.
            if isinstance(one, Choices):
                extra["structured_outputs"] = StructuredOutputsParams(choice=list(one.options))
            else:
                extra["structured_outputs"] = StructuredOutputsParams(json=json.loads(schema_text(one)))
        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=lm.stop_token_ids or None,
                              skip_special_tokens=True, logit_bias=bias, **extra)

    # One schema for all prompts, or one per prompt (vLLM takes a list of sampling parameters).
    params = [sampling(one) for one in schema] if isinstance(schema, (list, tuple)) else sampling(schema)
    outs = lm.llm.generate(list(prompts), params, lora_request=lm.lora, use_tqdm=progress)
    results = []
    for o in outs:
        c = o.outputs[0]
        reason = "budget" if c.finish_reason == "length" else "eos"
        rec = guard_text(c.text, reason, kind=guard) if guard else {"text": c.text, "stop_reason": reason,
                                                                     "guard_removed": ""}
        results.append({**rec, "n_prompt_tokens": len(o.prompt_token_ids), "n_new_tokens": len(c.token_ids)})
    return results


def decoding_modes(constrained: Any, max_items: int = 16,
                   schema: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any] | None]]:
    """The decoding runs a notebook's ``CONSTRAINED`` parameter asks for, as ``(name, schema)`` pairs.

    Args:
        constrained: a bool or a list of bools: ``False`` decodes freely (``"unconstrained"``), ``True`` constrains
            the answer to ``schema`` (``"constrained"``); ``[False, True]`` runs both, side by side.
        max_items: the ``maxItems`` bound of the default schema.
        schema: the JSON schema to constrain to; ``None`` is the ontology's
            (:func:`kgutils.ontology.decoding_schema`).

    Raises:
        ValueError: for anything but bools, or a mode named twice.
    """
    from .ontology import decoding_schema

    flags = constrained if isinstance(constrained, (list, tuple)) else [constrained]
    if not flags or not all(isinstance(f, bool) for f in flags) or len(set(flags)) != len(flags):
        raise ValueError(f"CONSTRAINED must be true, false or a list of distinct booleans, got {constrained!r}")
    chosen = schema if schema is not None else decoding_schema(max_items=max_items)
    return [("constrained", chosen) if f else ("unconstrained", None) for f in flags]


DECODE_ATTENTION = "kg_decode"


def _decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention for one new token per row (decoding steps) without expanding grouped key/value heads.

    PyTorch's CPU SDPA kernel is built for long queries; for a single query token per row, two batched products
    over the grouped heads are cheaper (and give the same result: the logits agree within 1e-4 in fp32). Prompt
    processing (queries longer than one token) goes to ``transformers``' SDPA attention unchanged.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = getattr(module, PREFIX_ATTRIBUTE, None)
    if prefix is not None and not dropout and query.shape[2] > 1:
        # Prompt processing: SDPA over the prefix (a broadcast view, not copied into the rows' caches) and the rows'
        # own keys. For long queries it is ×2.0 faster than the cascade below (a 32 x 178 batch: 2.2 s against
        # 4.5 s), which stays for the decoding steps, where reading the prefix once per step is what pays.
        pk, pv = prefix
        b, q_len, s_len = key.shape[0], query.shape[2], key.shape[2]
        key = torch.cat([pk.unsqueeze(0).expand(b, -1, -1, -1), key], dim=2)
        value = torch.cat([pv.unsqueeze(0).expand(b, -1, -1, -1), value], dim=2)
        if attention_mask is not None:
            own = attention_mask[..., -q_len:, :s_len]
            if own.dtype != torch.bool:
                own = own == 0
        else:  # causal among the new tokens, which are the last q_len of the row's keys
            own = torch.ones(q_len, s_len, dtype=torch.bool, device=query.device).tril(s_len - q_len)
            own = own.expand(b, 1, q_len, s_len)
        seen = torch.ones(*own.shape[:-1], pk.shape[1], dtype=torch.bool, device=own.device)
        return sdpa_attention_forward(module, query, key, value, torch.cat([seen, own], dim=-1), scaling=scaling,
                                      **{k: v for k, v in kwargs.items() if k != "is_causal"})
    if prefix is not None and not dropout:
        return _prefix_attention(query, key, value, attention_mask, prefix, scaling), None
    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(b, kv_heads, heads // kv_heads, dim)  # head h reads key/value head h // (heads / kv_heads)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:
        mask = attention_mask[..., : scores.shape[-1]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.matmul(torch.softmax(scores, dim=-1).to(value.dtype), value)
    return out.reshape(b, heads, 1, dim).transpose(1, 2), None


PREFIX_ATTRIBUTE = "_kg_shared_prefix"


def _prefix_attention(query: Any, key: Any, value: Any, attention_mask: Any, prefix: tuple[Any, Any],
                      scaling: float | None) -> Any:
    """Attention over a prefix that every row shares plus each row's own keys (cascade attention).

    ``prefix`` holds the shared prompt prefix's keys and values once (``[kv_heads, P, dim]``); ``key``/``value``
    hold the rows' own tokens after it (``[batch, kv_heads, S, dim]``, masked by ``attention_mask``, causal among
    the queries). The batch's queries are folded together against the shared keys, so the prefix is read once per
    step instead of once per row (with k demonstrations in 07's prompts the prefix is most of the context). The two
    parts are combined exactly, through one softmax normaliser: the result equals attention over the concatenated
    keys.

    Returns:
        ``[batch, queries, heads, dim]``, as ``transformers``' attention functions return it.
    """
    import torch

    b, heads, q_len, dim = query.shape
    kv_heads, s_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    pk, pv = prefix
    rows = groups * q_len  # query lines per (row, key/value head): head h reads key/value head h // groups
    q = query.reshape(b, kv_heads, rows, dim)
    # Shared part: every row's queries against the prefix keys, one product per key/value head.
    qs = q.transpose(0, 1).reshape(kv_heads, b * rows, dim)
    shared = torch.matmul(qs, pk.transpose(-1, -2)).float() * scale  # [kv_heads, b*rows, P]
    # Own part: each row's queries against its own keys, masked (padding, causal).
    own = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # [b, kv_heads, rows, S]
    own = own.view(b, kv_heads, groups, q_len, s_len)
    if attention_mask is not None:
        m = attention_mask[..., -q_len:, :s_len].unsqueeze(2)  # [b, 1, 1, q, S]
        own = own.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else own + m.float()
    elif q_len > 1:  # no mask given: causal among the new tokens, which are the last q_len keys
        causal = torch.ones(q_len, s_len, dtype=torch.bool, device=own.device).tril(s_len - q_len)
        own = own.masked_fill(~causal, float("-inf"))
    own = own.view(b, kv_heads, rows, s_len)
    top = torch.maximum(shared.amax(-1).view(kv_heads, b, rows).transpose(0, 1), own.amax(-1))  # [b, kvh, rows]
    e_own = torch.exp(own - top[..., None])
    e_shared = torch.exp(shared - top.transpose(0, 1).reshape(kv_heads, b * rows)[..., None])
    num = torch.matmul(e_own.to(value.dtype), value).float() + torch.matmul(
        e_shared.to(pv.dtype), pv).float().view(kv_heads, b, rows, dim).transpose(0, 1)
    den = e_own.sum(-1) + e_shared.sum(-1).view(kv_heads, b, rows).transpose(0, 1)
    out = (num / den[..., None]).to(query.dtype)
    return out.view(b, kv_heads, groups, q_len, dim).reshape(b, heads, q_len, dim).transpose(1, 2)


class _SharedPrefix:
    """While active, the attention layers ``modules`` (one per cache layer) read the shared prefix from
    ``prefix_cache`` (one copy, not one per row; :func:`_prefix_attention`)."""

    def __init__(self, modules: list[Any], prefix_cache: Any) -> None:
        self.modules, self.cache = modules, prefix_cache

    @classmethod
    def of(cls, model: Any, prefix_cache: Any) -> _SharedPrefix | None:
        """For a model running the decoding attention (:func:`for_inference`) whose attention layers match the
        cache's; else ``None`` (each row then gets its own copy of the prefix)."""
        if getattr(model.config, "_attn_implementation", "") != DECODE_ATTENTION:
            return None
        layers = {m.layer_idx: m for m in model.modules()
                  if isinstance(getattr(m, "layer_idx", None), int) and hasattr(m, "k_proj")}
        if sorted(layers) != list(range(len(prefix_cache.layers))):
            return None
        return cls([layers[i] for i in range(len(prefix_cache.layers))], prefix_cache)

    def __enter__(self) -> _SharedPrefix:
        for module, layer in zip(self.modules, self.cache.layers):
            setattr(module, PREFIX_ATTRIBUTE, (layer.keys[0], layer.values[0]))
        return self

    def __exit__(self, *exc: Any) -> None:
        for module in self.modules:
            if hasattr(module, PREFIX_ATTRIBUTE):
                delattr(module, PREFIX_ATTRIBUTE)


def _register_decode_attention() -> str:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, _decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return DECODE_ATTENTION


def for_inference(lm: LoadedModel | VllmModel, precision: str = "auto") -> LoadedModel | VllmModel:
    """A copy of a loaded model prepared for fast generation with the ``hf`` engine.

    A LoRA adapter (a PEFT model, e.g. :func:`kgutils.train.train_sft`'s ``loaded``) is merged into a copy of the
    weights (``merge_and_unload``): the same function, without the adapter's extra matrix products at every
    projection. ``precision`` (``auto``, ``bf16``, ``fp32``; :func:`kgutils.train.resolve_precision`) casts the copy
    to bf16 where the CPU or GPU computes it natively. The model passed in is left as it is. A vLLM model is
    returned unchanged.

    Returns:
        A :class:`LoadedModel` whose ``note`` says what was done.
    """
    import torch

    from .train import drop_forward_wrappers, resolve_precision

    if isinstance(lm, VllmModel):
        return lm
    chosen, why = resolve_precision(precision)
    model = lm.model
    notes = []

    def owned(m: Any) -> Any:
        """``m`` itself once it is already a copy; else a copy, so that the model passed in stays as it is."""
        return copy.deepcopy(m) if m is lm.model else m

    if any("forward" in m.__dict__ and getattr(m.__dict__["forward"], "__func__", None) is not type(m).forward
           for m in model.modules()):
        # A wrapper around the original forward would survive the copy and keep calling the original model.
        model = copy.deepcopy(model)
        drop_forward_wrappers(model)
    if is_4bit(model):  # QLoRA: the NF4 weights as the values the 4-bit kernels compute with, LoRA merged in
        model = dequantized_copy(model)
        notes.append("NF4 weights dequantized" + (", LoRA merged" if hasattr(lm.model, "merge_and_unload") else ""))
    elif hasattr(model, "merge_and_unload"):  # a PEFT model: merge a copy, the trainer's model stays as it is
        model = copy.deepcopy(model).merge_and_unload()
        notes.append("LoRA merged")
    dtype = torch.bfloat16 if chosen == "bf16" else torch.float32
    if next(model.parameters()).dtype != dtype:
        model = owned(model).to(dtype)
    if next(model.parameters()).device.type == "cpu" and not all(p.requires_grad for p in model.parameters()):
        # PyTorch's CPU bf16 linear runs 2.4-2.6x slower on weights flagged requires_grad=False, even under
        # inference_mode (measured here: SmolLM2-135M, a 32 x 178 prompt batch, 4.4 s against 1.85 s; the same
        # weights loaded into a fresh model take 1.7 s). PEFT freezes the base weights, so every merged adapter
        # carried the flag. Generation runs under inference_mode, where the flag records nothing.
        model = owned(model)
        for p in model.parameters():
            p.requires_grad_(True)
        notes.append("weights unfrozen (fast CPU kernels)")
    if next(model.parameters()).device.type == "cpu" and getattr(model.config, "_attn_implementation", "") == "sdpa":
        model = owned(model)
        model.set_attn_implementation(_register_decode_attention())
        notes.append("grouped-head decoding attention")
    model.eval()
    notes.append(f"{chosen} inference ({why})")
    return LoadedModel(model=model, tokenizer=lm.tokenizer, spec=lm.spec, kind=lm.kind,
                       stop_token_ids=list(lm.stop_token_ids), note="; ".join(filter(None, [lm.note, *notes])),
                       load_seconds=lm.load_seconds)


def is_4bit(model: Any) -> bool:
    """Whether a model (or the base of a PEFT model) holds bitsandbytes 4-bit weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False))


def dequantized_copy(model: Any, dtype: Any = None) -> Any:
    """A plain ``transformers`` model with the weights a 4-bit (QLoRA) model computes with: every NF4 matrix
    dequantized (``bitsandbytes.functional.dequantize_4bit``, exactly what its forward pass multiplies by) and, for
    a PEFT model, each LoRA update ``B·A·scaling`` added. The function is the 4-bit model's, in full-size weights
    that decode at full speed. The model passed in is left as it is.

    Args:
        dtype: of the copy's weights; None: float32 on CPU, bfloat16 on a GPU (a 3B model's copy then needs 6 GB,
            not 12). The LoRA update is added in float32 before the cast.
    """
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(base.parameters()).device
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def deq(layer: Any) -> Any:
        w = layer.weight
        if isinstance(layer, bnb.nn.Linear4bit):
            data, state = w.data, w.quant_state
            if getattr(state, "packing_format_for_cpu", False):
                # On CPU, bitsandbytes repacks the weights for its bf16 kernel at the first inference call; undo
                # that (as its own state-dict saving does) before dequantizing.
                from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

                data, state = _convert_weight_packed_for_cpu_inverse(data, copy.deepcopy(state))
            return bnb.functional.dequantize_4bit(data, state).float()
        return w.data.float()

    state: dict[str, Any] = {}
    handled: list[str] = []
    for name, mod in base.named_modules():
        if any(name.startswith(h + ".") for h in handled):
            continue
        if hasattr(mod, "base_layer") and hasattr(mod, "lora_A"):  # a PEFT LoRA layer
            w = deq(mod.base_layer)
            for adapter in mod.active_adapters:
                if adapter in mod.lora_A:
                    w = w + mod.get_delta_weight(adapter).float()
            state[f"{name}.weight"] = w.to(dtype)
            if getattr(mod.base_layer, "bias", None) is not None:
                state[f"{name}.bias"] = mod.base_layer.bias.data.to(dtype)
            handled.append(name)
        elif isinstance(mod, bnb.nn.Linear4bit):
            state[f"{name}.weight"] = deq(mod).to(dtype)
            if mod.bias is not None:
                state[f"{name}.bias"] = mod.bias.data.to(dtype)
            handled.append(name)
    config = copy.deepcopy(base.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    with torch.device("meta"):  # no second full-size allocation: the weights come from ``state`` (assign=True)
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    persistent = set(plain.state_dict())
    for name, p in list(base.named_parameters()) + [(n, b) for n, b in base.named_buffers() if n in persistent]:
        if not any(name.startswith(h + ".") for h in handled) and ".lora_" not in name:
            state[name] = p.data.to(dtype) if p.is_floating_point() else p.data
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    tied = {k for k in missing if "lm_head" in k and getattr(config.get_text_config(), "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"dequantizing failed: missing {sorted(set(missing) - tied)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    plain.tie_weights()
    # Non-persistent buffers (rotary frequencies, embedding scales) were built on the meta device: take the 4-bit
    # model's own.
    for name, buf in list(plain.named_buffers()):
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            setattr(plain.get_submodule(owner) if owner else plain, attr, base.get_buffer(name).detach().clone())
    leftover = [n for n, t in list(plain.named_parameters()) + list(plain.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"dequantizing failed: tensors left on the meta device: {leftover[:5]}")
    return plain.to(device).eval()


def render_prompt(tokenizer: Any, text: str, system: str | None = None) -> str:
    """The chat-formatted generation prompt for one passage (Qwen3 thinking disabled where supported)."""
    if tokenizer.chat_template:
        return render_messages(tokenizer, extraction_messages(text, system=system))
    # A tokenizer without a chat template gets the plain prompt followed by an answer cue.
    return extraction_prompt(text) + "\nAnswer:\n"


def render_messages(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """Chat messages rendered as a generation prompt with the tokenizer's template (Qwen3 thinking disabled).

    Raises:
        ValueError: when the tokenizer has no chat template (give the model one, as :mod:`kgutils.models` does
            for Gemma 3 270M).
    """
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template: these prompts need one")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)


def _gold_of(row: dict[str, Any]) -> list | None:
    """The row's gold items; ``None`` for a passage without labels (08's unlabelled held-out passages), so no
    reader mistakes it for a passage whose gold answer is empty."""
    for key in ("triplets", "gold", "gold_parsed"):
        if key in row:
            return row[key] if isinstance(row[key], list) else []
    return None


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every sequence shares, leaving each at least one token of its own."""
    if not seqs:
        return 0
    n = min(len(x) for x in seqs) - 1
    first = seqs[0]
    for x in seqs[1:]:
        k = 0
        while k < n and x[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _has_sliding_layers(model: Any) -> bool:
    types = getattr(getattr(model, "config", None), "layer_types", None) or []
    return any("sliding" in str(t) for t in types)


@dataclass(eq=False)
class _Row:
    index: int
    ids: list[int]
    guard: AnswerGuard | CallGuard | None
    matcher: Any = None
    new: list[int] = field(default_factory=list)
    stop_reason: str | None = None
    retired: bool = False  # its answer is written to the results


@dataclass
class _Batch:
    """Rows decoding together: their KV cache, attention mask and next positions, one line per row."""

    rows: list[_Row]
    cache: Any
    mask: Any
    next_pos: Any
    logits: Any = None

    def select(self, keep: list[int]) -> None:
        import torch

        sel = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.rows = [self.rows[k] for k in keep]
        self.mask, self.next_pos = self.mask[sel], self.next_pos[sel]
        if self.logits is not None:
            self.logits = self.logits[sel]
        self.trim()

    def trim(self) -> None:
        """Drop cache columns on the left that no row attends to any more (they belonged to rows that left):
        with rows joining on the right, the cache would otherwise only grow."""
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0 and all(not layer.is_sliding for layer in self.cache.layers):
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]


def _prefix_cache(model: Any, ids_all: Sequence[Sequence[int]], enabled: bool) -> tuple[int, Any]:
    """(length, KV cache) of the token prefix all prompts share, computed once; (0, None) when disabled or when
    the shared prefix is under 8 tokens (not worth a cache copy per row)."""
    import torch

    n_prefix = _common_prefix(ids_all) if enabled else 0
    if n_prefix < 8:
        return 0, None
    cache = _new_cache(model)
    device = next(model.parameters()).device
    with torch.inference_mode():
        model(input_ids=torch.tensor([list(ids_all[0][:n_prefix])], device=device), past_key_values=cache,
              use_cache=True, logits_to_keep=1)
    return n_prefix, cache


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _left_pad_time(t: Any, width: int) -> Any:
    """Pad a ``[batch, heads, time, dim]`` cache tensor on the left of its time axis to ``width`` (masked slots)."""
    import torch

    if t.shape[-2] == width:
        return t
    pad = t.new_zeros(*t.shape[:-2], width - t.shape[-2], t.shape[-1])
    return torch.cat([pad, t], dim=-2)


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """One batch from two, their caches aligned on the right (keys already carry their positions, so the padding
    slots on the left are simply masked). Full-attention caches only."""
    import torch

    width = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers):
        keys = torch.cat([_left_pad_time(la.keys, width), _left_pad_time(lb.keys, width)], dim=0)
        values = torch.cat([_left_pad_time(la.values, width), _left_pad_time(lb.values, width)], dim=0)
        la.keys, la.values = keys, values
    masks = [torch.cat([m.new_zeros(m.shape[0], width - m.shape[1]), m], dim=1) for m in (a.mask, b.mask)]
    merged = _Batch(rows=a.rows + b.rows, cache=a.cache, mask=torch.cat(masks),
                    next_pos=torch.cat([a.next_pos, b.next_pos]), logits=None)
    merged.trim()
    return merged


def _generate_hf(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_new_tokens: int,
    desc: str,
    progress: bool,
    sort_by_length: bool,
    stop_bias: float,
    schema: Any,
    guard: bool | str,
    share_prefix: bool | str,
    evict: bool = True,
    refill: bool = True,
) -> list[dict[str, Any]]:
    """Greedy decoding with ``transformers`` models and a KV cache, written out step by step so that

    * the prompts' shared token prefix (the instruction) is computed once and its cache copied into each batch;
    * a row leaves the batch as soon as it ends (end of answer, the guard, the budget), and waiting prompts take
      the free places (their prompts are processed and their caches joined to the batch's);
    * the guard (:class:`~kgutils.decoding.AnswerGuard`) and the grammar (xgrammar matchers) see every token.

    Models with sliding-window layers (Gemma 3) keep their cache as ``transformers`` manages it: no shared prefix,
    no joining of caches (rows still leave the batch).
    """
    import torch

    tok, model = lm.tokenizer, lm.model
    ids_all = tok(list(prompts), add_special_tokens=False)["input_ids"]
    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda i: len(ids_all[i]), reverse=True)
    device = next(model.parameters()).device
    stops = set(lm.stop_token_ids)
    stop_cols = torch.tensor(sorted(stops), dtype=torch.long, device=device) if stops else None
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # One schema for every row, or one per row (e.g. titles grounded in each passage), compiled as rows start.
    schemas = list(schema) if isinstance(schema, (list, tuple)) else [schema] * len(prompts)
    vocab = model.config.get_text_config().vocab_size

    def compiled(i: int) -> Any:
        return compile_grammar(tok, schemas[i], vocab_size=vocab, stop_token_ids=sorted(stops))

    grammar = Grammar(compiled(order[0]), batch_size) if prompts and schemas[0] is not None else None
    full_attention = not _has_sliding_layers(model)
    refill = refill and evict and full_attention

    # The shared prefix is computed once. With the decoding attention (for_inference), the rows' caches then hold
    # only their own tokens and every layer reads the prefix from one copy; otherwise each batch gets a copy per row.
    n_prefix, prefix_cache = _prefix_cache(model, ids_all, share_prefix and full_attention)
    shared = _SharedPrefix.of(model, prefix_cache) if prefix_cache is not None and share_prefix != "copy" else None

    def start(indices: list[int]) -> _Batch:
        """Process the prompts of new rows (after the shared prefix) in one forward pass."""
        rows = [_Row(i, ids_all[i], make_guard(guard),
                     grammar.matcher(compiled(i)) if grammar is not None else None) for i in indices]
        suffixes = [r.ids[n_prefix:] for r in rows]
        width = max(len(x) for x in suffixes)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in suffixes], device=device)
        suffix_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in suffixes], device=device)
        positions = (n_prefix + suffix_mask.cumsum(-1) - 1).clamp(min=0)
        if shared is not None:
            mask, cache = suffix_mask, _new_cache(model)
        elif prefix_cache is not None:
            mask = torch.cat([torch.ones(len(rows), n_prefix, dtype=torch.long, device=device), suffix_mask], dim=1)
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(rows))
        else:
            mask, cache = suffix_mask, _new_cache(model)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        return _Batch(rows=rows, cache=cache, mask=mask, next_pos=positions[:, -1] + 1, logits=out.logits[:, -1, :])

    def choose(batch: _Batch) -> tuple[Any, list[int]]:
        """Greedy next tokens from the batch's logits; records them and returns (tokens, lines still decoding)."""
        logits = batch.logits.float()
        if stop_bias and stop_cols is not None:
            logits[:, stop_cols] += float(stop_bias)
        if grammar is not None:  # (every row of a constrained batch is live: finished rows leave at once)
            grammar.mask(logits, [r.matcher for r in batch.rows])
        chosen = logits.argmax(-1)
        keep: list[int] = []
        for line, t in enumerate(chosen.tolist()):
            r = batch.rows[line]
            if r.stop_reason is not None:  # finished, still in the batch (evict=False only)
                continue
            r.new.append(t)
            if t in stops:
                r.stop_reason = "eos"
            else:
                if r.matcher is not None and Grammar.accept(r.matcher, t):
                    r.stop_reason = "eos"  # the grammar is complete: only an end-of-answer token fits
                if r.guard is not None and r.guard.feed(tok.decode(r.new, skip_special_tokens=True)):
                    r.stop_reason = "repeat"
                if r.stop_reason is None and len(r.new) >= max_new_tokens:
                    r.stop_reason = "budget"
            if r.stop_reason is None:
                keep.append(line)
        return chosen, keep

    results: list[dict[str, Any] | None] = [None] * len(prompts)
    bar = progress_bar(total=len(prompts), desc=desc, unit="passage", disable=not progress)

    def retire(rows: list[_Row]) -> None:
        """Write the answers of rows that ended (once each; with evict=False they stay in the batch)."""
        rows = [r for r in rows if r.stop_reason is not None and not r.retired]
        for r in rows:
            r.retired = True
            text = tok.decode(r.new, skip_special_tokens=True)
            removed = ""
            if r.guard is not None:
                text, removed = r.guard.close(text, r.stop_reason or "budget")
            results[r.index] = {"text": text, "n_prompt_tokens": len(r.ids), "n_new_tokens": len(r.new),
                                "stop_reason": r.stop_reason, "guard_removed": removed}
        bar.update(len(rows))

    queue = list(order)
    batch: _Batch | None = None
    with torch.inference_mode(), (shared if shared is not None else contextlib.nullcontext()):
        while queue or batch is not None:
            # Fill free places: a new batch, or (refill) the places that finished rows left.
            free = batch_size - (len(batch.rows) if batch is not None else 0)
            if queue and (batch is None or (refill and free >= max(1, batch_size // 4))):
                new = start(queue[:free])
                queue = queue[free:]
                tokens_new, keep_new = choose(new)
                retire(new.rows)
                if keep_new:
                    if len(keep_new) < len(new.rows):
                        new.select(keep_new)
                        tokens_new = tokens_new[keep_new]
                    if batch is None:
                        batch, tokens = new, tokens_new
                    else:
                        batch = _merge(batch, new)
                        tokens = torch.cat([tokens, tokens_new])
                if batch is None:
                    continue
            # One decoding step for every row of the batch.
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
            out = model(input_ids=tokens[:, None], attention_mask=batch.mask, position_ids=batch.next_pos[:, None],
                        past_key_values=batch.cache, use_cache=True)
            batch.next_pos = batch.next_pos + 1
            batch.logits = out.logits[:, -1, :]
            tokens, keep = choose(batch)
            retire(batch.rows)
            if not keep:
                batch = None
            elif evict and len(keep) < len(batch.rows):
                batch.select(keep)
                tokens = tokens[keep]
    bar.close()
    return results  # type: ignore[return-value]


def generate_texts(
    lm: LoadedModel | VllmModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    desc: str = "generate",
    progress: bool = True,
    sort_by_length: bool = True,
    stop_bias: float = 0.0,
    schema: Any = None,
    guard: bool | str = True,
    share_prefix: bool | str = True,
    evict: bool = True,
) -> list[dict[str, Any]]:
    """Greedy-decode rendered prompts: length-sorted batches with ``transformers``, or vLLM for a :class:`VllmModel`.

    Args:
        lm: a loaded model (:func:`kgutils.models.load_model`, :func:`for_inference`) or a :class:`VllmModel`.
        prompts: rendered prompts (chat template applied).
        batch_size: rows decoded together (``hf`` engine; vLLM schedules its own batches).
        max_new_tokens: token budget per answer.
        sort_by_length: ``False`` keeps the input order in the batches (more padding; for benchmarks).
        stop_bias: added to the stop tokens' logits at every step: below 0 the model ends its answer less readily.
        schema: a JSON schema to constrain the answer to (xgrammar; :func:`kgutils.ontology.decoding_schema` for
            the triplet format), or :class:`kgutils.decoding.Choices` (one of fixed strings, e.g. labels);
            ``None`` decodes freely; or a list with one schema per prompt (e.g. titles grounded in each passage,
            :func:`kgutils.ontology.ground_titles`).
        guard: the loop and budget guard: ``True`` or ``"json"`` (:class:`kgutils.decoding.AnswerGuard`), ``"code"``
            for code answers (:class:`kgutils.decoding.CallGuard`), ``False`` for none.
        share_prefix: compute the prompts' common token prefix once (``hf`` engine). With the decoding attention
            (:func:`for_inference`) every row then reads that prefix from one copy; ``"copy"`` gives each row its
            own copy instead (the earlier path, for the benchmark's side-by-side figures).
        evict: finished rows leave the batch at once (``hf`` engine); ``False`` keeps computing them until the
            whole batch is done, as ``transformers``' ``generate`` does (for the benchmark's step-by-step figures).

    Returns:
        One dict per prompt, in input order: ``{"text", "n_prompt_tokens", "n_new_tokens", "stop_reason",
        "guard_removed"}``; ``stop_reason`` is ``eos``, ``repeat`` (the guard) or ``budget``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if share_prefix not in (True, False, "copy"):
        raise ValueError(f"share_prefix must be True, False or 'copy', got {share_prefix!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if isinstance(schema, (list, tuple)):  # one schema per prompt
        if len(schema) != len(prompts):
            raise ValueError(f"{len(schema)} schemas for {len(prompts)} prompts: give one per prompt, or one for all")
        if any(s is None for s in schema) and any(s is not None for s in schema):
            raise ValueError("per-prompt schemas must all be given (constrained) or all be None (free decoding)")
        if all(s is None for s in schema):
            schema = None
    if schema is not None:
        for s in schema if isinstance(schema, (list, tuple)) else [schema]:
            schema_text(s)  # a bad schema fails here, naming the problem
        if not evict:
            raise ValueError("evict=False is a benchmark setting for unconstrained decoding only")
    if isinstance(lm, VllmModel):
        return _generate_vllm(lm, prompts, max_new_tokens, stop_bias, progress, schema, guard)
    return _generate_hf(lm, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, desc=desc,
                        progress=progress, sort_by_length=sort_by_length, stop_bias=stop_bias, schema=schema,
                        guard=guard, share_prefix=share_prefix, evict=evict)


def generation_frame(generation: dict[str, dict[str, Any]]):
    """One column per :func:`predict_file` summary (keyed by run label): new tokens/s, seconds, new tokens and the
    stop reasons, as a pandas DataFrame for notebooks."""
    import pandas as pd

    return pd.DataFrame({
        label: {"new tokens/s": g["new_tokens_per_second"], "seconds": g["wall_seconds"], "new tokens": g["new_tokens"],
                **{f"stop: {k}": v for k, v in g["stop_reasons"].items()}}
        for label, g in generation.items()
    }).fillna(0).round(1)


def predict_file(
    lm: LoadedModel | VllmModel,
    rows: Sequence[dict[str, Any]],
    out_path: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    system: str | None = None,
    resume: bool = True,
    progress: bool = True,
    schema: dict[str, Any] | None = None,
    guard: bool | str = True,
    task: str = "graph",
    messages: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
    parse: Callable[[str], tuple[list, str]] | None = None,
    ground_titles: bool = False,
) -> dict[str, Any]:
    """Generate predictions for passages and write the predictions JSONL.

    Args:
        lm: the loaded model (:func:`kgutils.models.load_model`, or :func:`load_vllm` on a GPU).
        rows: passages with ``id``, ``text`` and gold ``triplets`` (or ``gold``/``gold_parsed``).
        out_path: predictions JSONL to write.
        batch_size: prompts per generation batch.
        max_new_tokens: generation budget per passage (longer answers are cut and counted as truncated).
        system: optional system prompt.
        resume: keep rows already present in ``out_path`` (same ids, model and decoding) instead of generating
            them again.
        progress: show a progress bar.
        schema: constrain the answers to this JSON schema (``CONSTRAINED`` in the notebooks:
            :func:`kgutils.ontology.decoding_schema`); ``None`` decodes freely.
        ground_titles: in a constrained run (``schema`` given), each passage's answer may name only entities drawn
            from that passage (:func:`kgutils.ontology.ground_titles`; ``GROUND_TITLES`` in the notebooks): one
            grammar per passage. Free decoding has no grammar to ground, so there it changes nothing.
        guard: the loop and budget guard: True (json), "code" or False (see :func:`generate_texts`).
        task: ``"graph"``: the study's extraction prompt, answers parsed with the card's parse (``pred_parsed``)
            and :func:`kgutils.formats.parse_output` (``pred_repaired``); ``"spo"``: the Gemma recipe's
            ``{"triples": [...]}`` answers, parsed with :func:`kgutils.formats.parse_spo_output`, gold from the
            rows' ``spo`` documents (05).
        messages: row -> chat messages; required for ``"spo"`` (e.g. :func:`kgutils.prompts.spo_messages`),
            ``None`` for the graph task's own prompt (07 passes :func:`kgutils.prompts.ablation_messages` cells).
        parse: graph task only: answer text -> ``(items, status)`` in the graph format, replacing the card's
            parse for answers in another style (07's code prompts: :func:`kgutils.prompts.parse_ablation_answer`);
            the items are then also the repaired parse, so both parsers score the same items.

    Returns:
        A summary: counts, parse-status and stop-reason counts, wall time, passages and new tokens per second.
    """
    if task not in ("graph", "spo"):
        raise ValueError(f"task must be 'graph' or 'spo', got {task!r}")
    if task == "spo" and parse is not None:
        raise ValueError("parse applies to the graph task; the spo task parses with kgutils.formats.parse_spo_output")
    if task == "spo" and messages is None:
        raise ValueError("task 'spo' needs messages (row -> chat messages), e.g. kgutils.prompts.spo_messages")
    out = resolve(out_path)
    ground_titles = ground_titles and schema is not None
    decoding = {"constrained": schema is not None, "guard": guard,
                "schema_sha1": hashlib.sha1(schema_text(schema).encode()).hexdigest()[:12] if schema else None}
    if ground_titles:
        decoding["grounded_titles"] = True
    for n, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ValueError(f"passage {row.get('id', n)!r} has no text")
    ids = [str(row.get("id", n)) for n, row in enumerate(rows)]
    if len(set(ids)) != len(ids):
        raise ValueError("passage ids are not unique")

    done: dict[str, dict[str, Any]] = {}
    if resume and out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: generate that passage again
            if (isinstance(rec, dict) and str(rec.get("id")) in ids and rec.get("model") == lm.spec
                    and rec.get("decoding") == decoding):
                done[str(rec["id"])] = rec
    todo = [n for n, i in enumerate(ids) if i not in done]

    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    new_tokens = 0
    with out.open("a" if done else "w", encoding="utf-8") as fh:
        # Generate in chunks so finished work reaches the file (and survives an interruption) early.
        chunk = max(batch_size * 4, 1)
        for c in range(0, len(todo), chunk):
            part = todo[c : c + chunk]
            chats = {n: messages(rows[n]) for n in part} if messages is not None else {}
            prompts = [render_messages(lm.tokenizer, chats[n]) if chats else
                       render_prompt(lm.tokenizer, rows[n]["text"], system) for n in part]
            gens = generate_texts(
                lm,
                prompts,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                desc=f"{lm.spec} [{c + len(part)}/{len(todo)}]",
                progress=progress,
                schema=[ground(schema, rows[n]["text"]) for n in part] if ground_titles else schema,
                guard=guard,
            )
            for n, gen in zip(part, gens):
                row = rows[n]
                if task == "spo":
                    parsed = parse_spo_output(gen["text"])
                    fields = {"prompt": chats[n][-1]["content"], "gold_parsed": row.get("spo", {"triples": []}),
                              "pred_parsed": parsed["doc"], "parse_status": parsed["status"],
                              "repair_status": parsed["status"], "n_invalid_items": parsed["n_invalid"]}
                else:
                    if parse is not None:
                        card_items, card_status = parse(gen["text"])
                        repaired = SimpleNamespace(items=card_items, status=card_status)
                    else:
                        card_items, card_status = parse_card_output(gen["text"])
                        repaired = parse_output(gen["text"])
                    status = repaired.status
                    if gen["n_new_tokens"] >= max_new_tokens and status not in ("ok", "repaired"):
                        status = "truncated"
                    fields = {"prompt": extraction_prompt(row["text"]), "gold_parsed": _gold_of(row),
                              "pred_parsed": card_items, "parse_status": card_status,
                              "pred_repaired": repaired.items, "repair_status": status}
                rec = {"id": ids[n], "text": row["text"], "pred_raw": gen["text"], **fields,
                       **{k: gen[k] for k in ("n_prompt_tokens", "n_new_tokens", "stop_reason", "guard_removed")},
                       "model": lm.spec, "decoding": decoding}
                new_tokens += gen["n_new_tokens"]
                done[ids[n]] = rec
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
    wall = time.perf_counter() - t0

    ordered = [done[i] for i in ids]
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8")
    tmp.replace(out)

    statuses: dict[str, int] = {}
    repairs: dict[str, int] = {}
    stops: dict[str, int] = {}
    for r in ordered:
        statuses[r["parse_status"]] = statuses.get(r["parse_status"], 0) + 1
        repairs[r["repair_status"]] = repairs.get(r["repair_status"], 0) + 1
        reason = r.get("stop_reason") or "unknown"
        stops[reason] = stops.get(reason, 0) + 1
    n = len(ordered)
    failures = n - statuses.get("ok", 0)
    return {
        "path": str(out),
        "model": lm.spec,
        "n": n,
        "n_generated": len(todo),
        "n_resumed": n - len(todo),
        "parse_status": statuses,
        "repair_status": repairs,
        "stop_reasons": stops,
        "decoding": decoding,
        "parse_failure_rate": failures / n if n else 0.0,
        "wall_seconds": wall,
        "passages_per_second": len(todo) / wall if wall > 0 and todo else None,
        "new_tokens": new_tokens,
        "new_tokens_per_second": new_tokens / wall if wall > 0 and todo else None,
    }


def _end_of_answer_id(lm: LoadedModel) -> int:
    """The token that ends an assistant turn in the chat template (the first stop token after the answer)."""
    tok = lm.tokenizer
    stops = list(lm.stop_token_ids)
    if not stops:
        raise ValueError(f"{lm.spec} has no end-of-answer token to score answers with")
    try:
        ids = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "zq"}],
                                      tokenize=True, add_generation_prompt=False)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        tail = tok.decode(ids).rsplit("zq", 1)[-1]
        after = tok(tail, add_special_tokens=False)["input_ids"]
        return next(t for t in after if t in stops)
    except (StopIteration, ValueError, TypeError, KeyError):
        return stops[0]


def _label_tree(conts: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int], list[list[int]]]:
    """The answers' token sequences as one prefix tree, for scoring them all in one packed row.

    A node stands for a token prefix that some answer continues (every answer but its last token), so an answer's
    tokens after the first are predicted at its prefix's node. Returns ``(tokens, parents, depths, paths)``: each
    node's token, its parent node (-1 for a first token), its depth (0 for a first token), and for each answer the
    nodes whose logits predict its tokens after the first (``len(answer) - 1`` of them, in order).
    """
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    index: dict[tuple[int, ...], int] = {}
    paths: list[list[int]] = []
    for c in conts:
        path: list[int] = []
        for j in range(len(c) - 1):
            key = tuple(c[: j + 1])
            if key not in index:
                index[key] = len(tokens)
                tokens.append(c[j])
                parents.append(path[-1] if path else -1)
                depths.append(j)
            path.append(index[key])
        paths.append(path)
    return tokens, parents, depths, paths


def score_choices(
    lm: LoadedModel,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    desc: str = "score",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score every allowed answer of each prompt by its likelihood: log p(answer tokens, then the end-of-answer
    token | prompt), in one forward pass per batch of prompts.

    Each row holds a prompt (after the prompts' shared prefix) followed by its answers packed as a prefix tree
    (:func:`_label_tree`): a tree node attends to the prompt and to its own ancestors only, and sits at the position
    its token has in the answer, so every answer is scored exactly as if it followed the prompt alone, while shared
    answer prefixes (``located_in`` / ``located_near``) are computed once and the prompt's cache is never copied per
    answer. The prompts' shared token prefix (system turn, shared demonstrations) is computed once; with the
    decoding attention (:func:`for_inference`) every row reads it from one copy.

    Ending with the end-of-answer token makes a label that is a prefix of another (``work`` / ``work_for``)
    compete fairly. ``hf`` engine only.

    Args:
        lm: a loaded model (:func:`for_inference` for bf16 on CPU).
        prompts: rendered prompts (chat template applied, generation prompt added).
        choices: the allowed answers of each prompt (e.g. its data set's labels).
        batch_size: prompts per forward pass (fewer where their logits would exceed about 2^27 values).

    Returns:
        One dict per prompt: ``{"text": best answer, "scores": {answer: log-likelihood}, "n_prompt_tokens",
        "n_scored_tokens" (the tree's nodes), "seconds" (its share of its batch's time)}``.
    """
    import torch

    if len(prompts) != len(choices):
        raise ValueError(f"{len(prompts)} prompts but {len(choices)} choice lists")
    if isinstance(lm, VllmModel):
        raise ValueError("score_choices needs a transformers model (load_model), not a vLLM engine")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tok, model = lm.tokenizer, lm.model
    device = next(model.parameters()).device
    end = _end_of_answer_id(lm)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    encoded: dict[str, list[int]] = {}
    ids_all = tok(list(prompts), add_special_tokens=False)["input_ids"]
    items = []
    for i, (ids, opts) in enumerate(zip(ids_all, choices)):
        opts = list(dict.fromkeys(opts))
        if not opts:
            raise ValueError(f"prompt {i} has no choices to score")
        for o in opts:
            if o not in encoded:
                encoded[o] = tok(o, add_special_tokens=False)["input_ids"] + [end]
        items.append((ids, opts, _label_tree([encoded[o] for o in opts])))
    # Which tree nodes each node attends to (its ancestors and itself), once per distinct answer list.
    ancestors: dict[tuple[str, ...], Any] = {}
    for _, opts, (tokens, parents, _, _) in items:
        if tuple(opts) not in ancestors:
            anc = torch.eye(len(tokens), dtype=torch.bool)
            for k, parent in enumerate(parents):  # parents come before their children
                if parent >= 0:
                    anc[k] |= anc[parent]
            ancestors[tuple(opts)] = anc
    sliding = _has_sliding_layers(model)
    window = getattr(model.config.get_text_config(), "sliding_window", None) if sliding else None
    n_prefix, prefix_cache = _prefix_cache(model, ids_all, len(ids_all) > 1 and not sliding)
    shared = _SharedPrefix.of(model, prefix_cache) if prefix_cache is not None else None
    vocab = model.config.get_text_config().vocab_size
    need = [len(ids) - n_prefix + len(tree[0]) for ids, _, tree in items]  # each row's width
    out: list[dict[str, Any]] = []
    bar = progress_bar(total=len(items), desc=desc, unit="example", disable=not progress)
    start = 0
    with torch.inference_mode(), (shared if shared is not None else contextlib.nullcontext()):
        while start < len(items):
            # As many prompts as fit the batch and a bound on the logits held at once (rows * width * vocab).
            stop, width = start + 1, need[start]
            while stop < min(len(items), start + batch_size) and \
                    (stop + 1 - start) * max(width, need[stop]) * vocab <= 2 ** 27:
                width = max(width, need[stop])
                stop += 1
            chunk = items[start:stop]
            t0 = time.perf_counter()
            lengths = [len(ids) - n_prefix for ids, _, _ in chunk]
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            positions = torch.zeros((len(chunk), width), dtype=torch.long)
            allowed = torch.eye(width, dtype=torch.bool).repeat(len(chunk), 1, 1)  # padding reads itself only
            for r, (n, (ids, opts, (tokens, _, depths, _))) in enumerate(zip(lengths, chunk)):
                end_row = n + len(tokens)
                input_ids[r, :end_row] = torch.tensor(ids[n_prefix:] + tokens)
                positions[r, :n] = torch.arange(n_prefix, n_prefix + n)
                positions[r, n:end_row] = n_prefix + n + torch.tensor(depths, dtype=torch.long)
                allowed[r, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
                allowed[r, n:end_row, :n] = True  # every node reads the whole prompt ...
                allowed[r, n:end_row, n:end_row] = ancestors[tuple(opts)]  # ... and its own ancestors
            input_ids, positions, allowed = input_ids.to(device), positions.to(device), allowed.to(device)
            if shared is None and prefix_cache is not None:  # a copy of the prefix per row
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(chunk))
                allowed = torch.cat([allowed.new_ones(len(chunk), width, n_prefix), allowed], dim=-1)
                key_positions = torch.cat([torch.arange(n_prefix, device=device).expand(len(chunk), n_prefix),
                                           positions], dim=1)
            else:
                cache, key_positions = None, positions
            mask: Any = allowed[:, None]
            if window:
                near = (positions[:, :, None] - key_positions[:, None, :]) < window
                mask = {"full_attention": mask, "sliding_attention": (allowed & near)[:, None]}
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                           use_cache=cache is not None).logits
            seconds = (time.perf_counter() - t0) / len(chunk)
            for r, (n, (ids, opts, (tokens, _, _, paths))) in enumerate(zip(lengths, chunk)):
                logp = logits[r, n - 1 : n + len(tokens)].float().log_softmax(-1)  # the prompt's last token, nodes
                scores = {}
                for o, path in zip(opts, paths):
                    c = encoded[o]
                    scores[o] = float(logp[0, c[0]]) + sum(float(logp[1 + node, t]) for node, t in zip(path, c[1:]))
                out.append({"text": max(scores, key=scores.get), "scores": scores, "n_prompt_tokens": len(ids),
                            "n_scored_tokens": len(tokens), "seconds": seconds})
            bar.update(len(chunk))
            start = stop
    bar.close()
    return out


# ------------------------------------------------------------------------------------ prompt ablation (07)


def demo_pool(train: list[dict[str, Any]], exclude: Sequence[dict[str, Any]] = (), *, max_chars: int = 0,
              seed: int = 0) -> Any:
    """In-context examples for 07's prompts: a :class:`kgutils.mixtune.DemoPool` over the *train* passages that
    hold at least one triplet (and, with ``max_chars``, are at most that long, so k = 5 still fits the context).
    Train passages whose text also occurs in ``exclude`` (pass val and test) never enter it."""
    from .mixtune import DemoPool

    keep = [{**r, "dataset": "passages"} for r in train if r.get("triplets")
            and (not max_chars or len(r["text"]) <= max_chars)]
    if not keep:
        raise ValueError("no train passage with triplets to draw in-context examples from")
    return DemoPool(keep, [{**r, "dataset": "passages"} for r in exclude], seed=seed)


def ablation_demos(rows: list[dict[str, Any]], pool: Any, k: int) -> dict[str, list[dict[str, Any]]]:
    """The ``k`` in-context examples of each passage of 07's cells, by passage id: the same ones for every passage
    (``shared``: their tokens form a prefix computed once), the next ones for a passage that is itself among them."""
    return {str(r.get("id", n)): pool.pick({**r, "dataset": "passages", "id": r.get("id", n)}, k, shared=True)
            for n, r in enumerate(rows)}


def predict_ablation_cell(lm: Any, cell: Any, rows: list[dict[str, Any]], pool: Any, out_path: str | Path, *,
                          batch_size: int = 8, max_new_tokens: int = 512, rationale_tokens: int = 0,
                          guard: bool = True, progress: bool = True) -> dict[str, Any]:
    """Predictions of one cell of 07's grid (:class:`kgutils.evaluation.AblationCell`) through :func:`predict_file`:
    the cell's prompt (:func:`kgutils.prompts.ablation_messages`) after ``cell.k`` demonstrations from ``pool``
    (the same for every passage, so their tokens form a shared prefix computed once), and the style's parser
    (:func:`kgutils.prompts.parse_ablation_answer`) back to the graph format. Free decoding: the ontology grammar
    forces a JSON array, which neither code answers nor rationales are. With ``guard``, each style gets the loop
    and budget guard that reads its answers (``json``, or ``code``: :class:`kgutils.decoding.CallGuard`), so a
    looping answer is cut the same way in both styles. A cell with a rationale gets ``rationale_tokens`` more
    than ``max_new_tokens``.

    Returns:
        :func:`predict_file`'s summary with ``demo_ids`` (passage id -> the ids of its demonstrations).
    """
    from .prompts import ablation_messages, parse_ablation_answer

    style_guard = ("code" if cell.style == "code" else "json") if guard else False
    demos = ablation_demos(rows, pool, cell.k)
    budget = max_new_tokens + (rationale_tokens if cell.rationale else 0)
    out = predict_file(lm, rows, out_path, batch_size=batch_size, max_new_tokens=budget, guard=style_guard,
                       progress=progress,
                       messages=lambda r: ablation_messages(r, cell.style, cell.rationale, demos[str(r["id"])]),
                       parse=lambda raw: parse_ablation_answer(raw, cell.style))
    return {**out, "demo_ids": {i: [d["id"] for d in ds] for i, ds in demos.items()}}

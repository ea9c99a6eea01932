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

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .formats import parse_output
from .io import progress as progress_bar
from .io import resolve
from .metrics import parse_card_output
from .models import LoadedModel, choose_gpu_option, model_path
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
        llm = LLM(model=path, enable_lora=True, max_lora_rank=max_lora_rank, max_model_len=max_model_len,
                  gpu_memory_utilization=gpu_memory_utilization, seed=seed)
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
    lm: VllmModel, prompts: Sequence[str], max_new_tokens: int, stop_bias: float = 0.0, progress: bool = True
) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    bias = {t: float(stop_bias) for t in lm.stop_token_ids} if stop_bias else None
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=lm.stop_token_ids or None,
                            skip_special_tokens=True, logit_bias=bias)
    outs = lm.llm.generate(list(prompts), params, lora_request=lm.lora, use_tqdm=progress)
    return [{"text": o.outputs[0].text, "n_prompt_tokens": len(o.prompt_token_ids),
             "n_new_tokens": len(o.outputs[0].token_ids)} for o in outs]


def render_prompt(tokenizer: Any, text: str, system: str | None = None) -> str:
    """The chat-formatted generation prompt for one passage (Qwen3 thinking disabled where supported)."""
    messages = extraction_messages(text, system=system)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    # A tokenizer without a chat template gets the plain prompt followed by an answer cue.
    return extraction_prompt(text) + "\nAnswer:\n"


def _gold_of(row: dict[str, Any]) -> list:
    for key in ("triplets", "gold", "gold_parsed"):
        if key in row:
            return row[key] if isinstance(row[key], list) else []
    return []


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
) -> list[dict[str, Any]]:
    """Greedy-decode rendered prompts: length-sorted batches with ``transformers``, or vLLM for a :class:`VllmModel`.

    ``sort_by_length=False`` keeps the input order in the batches (more padding; for the throughput benchmark).
    ``stop_bias`` is added to the logits of the stop tokens at every step: below 0 the model ends its answer less
    readily (a decoding setting to tune on validation data, e.g. for answers that list a variable number of items).

    Returns:
        One dict per prompt, in input order: ``{"text", "n_prompt_tokens", "n_new_tokens"}``.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(lm, VllmModel):
        return _generate_vllm(lm, prompts, max_new_tokens, stop_bias, progress)
    tok, model = lm.tokenizer, lm.model
    # Tokenize once: the lengths order the batches and the ids are padded per batch.
    ids_all = tok(list(prompts), add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in ids_all]
    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda i: lengths[i], reverse=True)
    results: list[dict[str, Any] | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    bar = progress_bar(total=len(prompts), desc=desc, unit="passage", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok.pad({"input_ids": [ids_all[i] for i in idx]}, return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                eos_token_id=lm.stop_token_ids or None,
                pad_token_id=tok.pad_token_id,
                sequence_bias=[[[t], float(stop_bias)] for t in lm.stop_token_ids] if stop_bias else None,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            ids = new[row].tolist()
            # Count tokens up to and including the first stop token; the rest is padding.
            n = next((k + 1 for k, t in enumerate(ids) if t in lm.stop_token_ids), len(ids))
            results[i] = {
                "text": tok.decode(ids[:n], skip_special_tokens=True),
                "n_prompt_tokens": lengths[i],
                "n_new_tokens": n,
            }
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


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
) -> dict[str, Any]:
    """Generate predictions for passages and write the predictions JSONL.

    Args:
        lm: the loaded model (:func:`kgutils.models.load_model`, or :func:`load_vllm` on a GPU).
        rows: passages with ``id``, ``text`` and gold ``triplets`` (or ``gold``/``gold_parsed``).
        out_path: predictions JSONL to write.
        batch_size: prompts per generation batch.
        max_new_tokens: generation budget per passage (longer answers are cut and counted as truncated).
        system: optional system prompt.
        resume: keep rows already present in ``out_path`` (same ids) instead of generating them again.
        progress: show a progress bar.

    Returns:
        A summary: counts, parse-status counts, wall time and passages per second.
    """
    out = resolve(out_path)
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
            if isinstance(rec, dict) and str(rec.get("id")) in ids and rec.get("model") == lm.spec:
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
            prompts = [render_prompt(lm.tokenizer, rows[n]["text"], system) for n in part]
            gens = generate_texts(
                lm,
                prompts,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                desc=f"{lm.spec} [{c + len(part)}/{len(todo)}]",
                progress=progress,
            )
            for n, gen in zip(part, gens):
                row = rows[n]
                card_items, card_status = parse_card_output(gen["text"])
                repaired = parse_output(gen["text"])
                status = repaired.status
                if gen["n_new_tokens"] >= max_new_tokens and status not in ("ok", "repaired"):
                    status = "truncated"
                rec = {
                    "id": ids[n],
                    "text": row["text"],
                    "prompt": extraction_prompt(row["text"]),
                    "gold_parsed": _gold_of(row),
                    "pred_raw": gen["text"],
                    "pred_parsed": card_items,
                    "parse_status": card_status,
                    "pred_repaired": repaired.items,
                    "repair_status": status,
                    "n_prompt_tokens": gen["n_prompt_tokens"],
                    "n_new_tokens": gen["n_new_tokens"],
                    "model": lm.spec,
                }
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
    for r in ordered:
        statuses[r["parse_status"]] = statuses.get(r["parse_status"], 0) + 1
        repairs[r["repair_status"]] = repairs.get(r["repair_status"], 0) + 1
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
        "parse_failure_rate": failures / n if n else 0.0,
        "wall_seconds": wall,
        "passages_per_second": len(todo) / wall if wall > 0 and todo else None,
        "new_tokens": new_tokens,
    }

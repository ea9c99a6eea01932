"""Batched greedy generation of triplet predictions.

Passages are sorted by prompt length so a batch holds prompts of similar length (less padding), padded on
the left (decoder-only models continue from the right edge) and decoded greedily with the KV cache. Each
finished batch is appended to the predictions file at once, so an interrupted run resumes where it
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
from pathlib import Path
from typing import Any

from .formats import parse_output
from .io import progress as progress_bar
from .io import resolve
from .metrics import parse_card_output
from .models import LoadedModel
from .prompts import extraction_messages, extraction_prompt


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
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    desc: str = "generate",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Greedy-decode rendered prompts in length-sorted batches.

    Returns:
        One dict per prompt, in input order: ``{"text", "n_prompt_tokens", "n_new_tokens"}``.
    """
    import torch

    tok, model = lm.tokenizer, lm.model
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # Tokenize once: the lengths order the batches and the ids are padded per batch.
    ids_all = tok(list(prompts), add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in ids_all]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i], reverse=True)
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
    lm: LoadedModel,
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
        lm: the loaded model.
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

"""CPU generation speed of the extraction core: the old path and the new one, side by side in one run.

A benchmark, not a test: it prints what it measures and never fails on a slow machine.

Prompts: 03's test prompts (02's test split, ``data/runs/02_teacher_labels/latest/splits/test.jsonl``; run
``make run ONLY=02`` first), rendered with the chat template, greedy, ``--max-new-tokens`` (03's 320) each.
Models: the embedded SmolLM2-135M-Instruct (03's ``cpu`` stand-in) and, with ``--adapter`` (default: the adapter of
the last 03 run, when there is one), the fine-tuned model.

Settings, one change at a time, each over the same prompts:

0. ``old``: ``transformers`` ``generate`` on length-sorted, left-padded batches of ``--batch-size``, fp32 (the
   extraction core before this benchmark; the LoRA adapter applied unmerged);
1. ``step loop``: :mod:`kgutils.generate`'s own decoding loop, nothing else changed (rows stay in the batch until
   the batch ends, no shared prefix, no guard): its answers should be the old ones;
2. ``+ evict``: a row leaves the batch as soon as it ends and a waiting prompt takes its place;
3. ``+ prefix``: the instruction's tokens, shared by every prompt, are computed once per run;
4. ``+ merge``: the LoRA adapter merged into a copy of the weights (fine-tuned model only);
5. ``+ bf16``: bf16 weights where the CPU computes bf16 natively (AVX-512 BF16 / AMX), with the grouped-head
   decoding attention (:func:`kgutils.generate.for_inference`);
6. ``+ batch``: ``--batch-size`` rows decoding together (48, 03's ``cpu`` setting) instead of ``--old-batch-size``
   (16, the setting before);
7. ``+ guard``: the loop and budget guard (the default);
8. ``+ constrained``: the ontology grammar (xgrammar), the ``CONSTRAINED`` option.

Reported per setting: new tokens per second (all new tokens over the wall time, prompt processing included),
seconds, the ratio to ``old``, how many answers are identical to ``old``'s, the stop reasons, and the card-parse
``hgr`` and ``corrected`` composites (so a change of tokens shows what it does to the scores).

Run: ``python -m benchmarks.bench_generation [--limit N] [--adapter DIR] [--settings old,guard,...]``. Writes
``data/runs/bench_generation/<stamp>/generation.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kgutils import metrics
from kgutils.generate import for_inference, generate_texts, render_prompt
from kgutils.io import read_jsonl, repo_root, resolve, write_json
from kgutils.models import LoadedModel, load_model
from kgutils.ontology import decoding_schema
from kgutils.prompts import extraction_prompt

MODEL = "embedded:smollm2-135m-instruct"
TEST_FILE = "data/runs/02_teacher_labels/latest/splits/test.jsonl"
SETTINGS = ("old", "step loop", "+ evict", "+ prefix", "+ merge", "+ bf16", "+ batch", "+ guard", "+ constrained")


def old_generate(lm: LoadedModel, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[dict]:
    """The extraction core's previous path: ``model.generate`` on length-sorted, left-padded batches."""
    import torch

    tok, model = lm.tokenizer, lm.model
    ids_all = tok(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(ids_all[i]), reverse=True)
    results: list[dict | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok.pad({"input_ids": [ids_all[i] for i in idx]}, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 eos_token_id=lm.stop_token_ids or None, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            ids = new[row].tolist()
            n = next((k + 1 for k, t in enumerate(ids) if t in lm.stop_token_ids), len(ids))
            results[i] = {"text": tok.decode(ids[:n], skip_special_tokens=True), "n_new_tokens": n,
                          "stop_reason": "eos" if n < len(ids) or ids[n - 1] in lm.stop_token_ids else "budget"}
    return results  # type: ignore[return-value]


def composites(rows: list[dict], texts: list[str]) -> dict[str, float]:
    entries = [{"prompt": extraction_prompt(r["text"]), "gold_parsed": r["triplets"], "pred_raw": t}
               for r, t in zip(rows, texts)]
    out = {}
    for m in metrics.METRICS:
        res = metrics.evaluate(entries, metric=m, n_resamples=0)
        out[m] = res["macro"]["composite"]
    failures = sum(metrics.parse_card_output(t)[1] != "ok" for t in texts)
    out["card_parse_failures"] = failures
    return out


def run_model(name: str, lm: LoadedModel, rows: list[dict], args: argparse.Namespace) -> list[dict]:
    prompts = [render_prompt(lm.tokenizer, r["text"]) for r in rows]
    wanted = [s for s in SETTINGS if s in args.settings]
    results: list[dict] = []
    reference = None
    merged = None
    for setting in wanted:
        if setting == "+ merge" and not hasattr(lm.model, "merge_and_unload"):
            continue
        step = SETTINGS.index(setting)
        model = lm
        if step >= SETTINGS.index("+ merge"):
            merged = merged or {}
            precision = "bf16" if step >= SETTINGS.index("+ bf16") else "fp32"
            if precision not in merged:
                merged[precision] = for_inference(lm, precision=precision)
            model = merged[precision]
        batch_size = args.batch_size if step >= SETTINGS.index("+ batch") else args.old_batch_size
        t0 = time.perf_counter()
        if setting == "old":
            gens = old_generate(model, prompts, batch_size, args.max_new_tokens)
        else:
            gens = generate_texts(
                model, prompts, batch_size=batch_size, max_new_tokens=args.max_new_tokens, progress=False,
                evict=step >= SETTINGS.index("+ evict"), share_prefix=step >= SETTINGS.index("+ prefix"),
                guard=step >= SETTINGS.index("+ guard"),
                schema=decoding_schema(args.max_items) if step >= SETTINGS.index("+ constrained") else None)
        seconds = time.perf_counter() - t0
        texts = [g["text"] for g in gens]
        new = sum(g["n_new_tokens"] for g in gens)
        if reference is None:
            reference = texts
        stops: dict[str, int] = {}
        for g in gens:
            stops[g["stop_reason"]] = stops.get(g["stop_reason"], 0) + 1
        r = {"model": name, "setting": setting, "batch_size": batch_size, "seconds": seconds, "new_tokens": new,
             "new_tokens_per_s": new / seconds, "passages_per_s": len(prompts) / seconds,
             "identical_to_old": sum(a == b for a, b in zip(texts, reference)), "passages": len(prompts),
             "stop_reasons": stops, **composites(rows, texts)}
        results.append(r)
        print(f"  {name:10s} {setting:15s} {r['new_tokens_per_s']:7.1f} new tok/s  {seconds:6.1f} s  "
              f"{new:6d} tokens  same as old {r['identical_to_old']:3d}/{len(prompts)}  "
              f"hgr {r['hgr']:.3f}  corrected {r['corrected']:.3f}  card-parse failures "
              f"{r['card_parse_failures']:2d}  stops {stops}", flush=True)
    base = results[0]["new_tokens_per_s"]
    for r in results:
        r["ratio_to_first"] = r["new_tokens_per_s"] / base
    return results


def default_adapter() -> str:
    try:
        path = resolve(repo_root() / "data" / "runs" / "03_sft_qwen3" / "latest" / "adapter")
    except FileNotFoundError:  # 03 has never run
        return ""
    return str(path) if (path / "adapter_config.json").is_file() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-file", default=TEST_FILE)
    ap.add_argument("--limit", type=int, default=0, help="first N test passages only, 0 for all")
    ap.add_argument("--adapter", default=None, help="fine-tuned LoRA adapter folder ('' for the base model only)")
    ap.add_argument("--batch-size", type=int, default=48, help="rows decoding together, from '+ batch' on")
    ap.add_argument("--old-batch-size", type=int, default=16, help="rows decoding together before '+ batch'")
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--max-items", type=int, default=16, help="maxItems of the decoding schema")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of: " + ", ".join(SETTINGS))
    args = ap.parse_args()
    args.settings = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    try:
        rows = read_jsonl(args.test_file)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}\nRun `make run ONLY=02` (or the whole study) first, or pass --test-file.") from exc
    rows = rows[: args.limit] if args.limit else rows
    adapter = default_adapter() if args.adapter is None else args.adapter
    import torch

    print(f"Generation over {len(rows)} test prompts ({args.test_file}), batch {args.old_batch_size} then "
          f"{args.batch_size}, "
          f"<= {args.max_new_tokens} new tokens, greedy, {torch.get_num_threads()} threads")
    report: dict = {"model": MODEL, "adapter": adapter, "settings": vars(args), "results": []}
    base = load_model(MODEL, for_family="qwen3")
    report["results"] += run_model("base", base, rows, args)
    if adapter:
        from kgutils.train import load_adapter

        tuned = load_adapter(MODEL, adapter)
        report["results"] += run_model("fine-tuned", tuned, rows, args)
    out = repo_root() / "data" / "runs" / "bench_generation" / time.strftime("%Y%m%d-%H%M%S")
    write_json(Path(out) / "generation.json", report)
    print(f"written {out / 'generation.json'}")


if __name__ == "__main__":
    main()

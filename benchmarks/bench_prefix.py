"""Decoding speed with long shared prompt prefixes (07's k-shot prompts): the prefix read from one copy by every
row, against a copy per row and against no sharing, side by side in one run.

A benchmark, not a test: it prints what it measures and never fails on a slow machine.

Prompts: 07's cell prompts (:func:`kgutils.prompts.ablation_messages`) for the first ``--limit`` passages of 02's
test split, with ``--shots`` in-context examples drawn from the train split (the same for every passage, as 07
draws them, so instruction and demonstrations form a prefix every prompt shares), in ``--style`` with or without
``--rationale``. Model: the embedded SmolLM2-135M-Instruct prepared as every notebook prepares it for generation
(:func:`kgutils.generate.for_inference`: bf16 where native, the decoding attention), greedy, the loop guard on.

Settings, each over the same prompts:

* ``none``: no shared prefix (every prompt processed whole, its cache its own);
* ``copy``: the shared prefix computed once and copied into each row's cache (the path before this benchmark);
* ``once``: the shared prefix computed once and read from one copy by every row at every step (cascade attention,
  :func:`kgutils.generate._prefix_attention`), the default.

Reported per setting: new tokens per second (prompt processing included), seconds, the ratio to ``copy``, and
how many answers equal ``copy``'s (the three compute the same function; bf16 rounding may differ in the order of
additions).

Run: ``python -m benchmarks.bench_prefix [--shots 3] [--limit 16] [--rationale]``. Writes
``data/runs/bench_prefix/<stamp>/prefix.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kgutils.generate import ablation_demos, demo_pool, for_inference, generate_texts, render_messages
from kgutils.io import read_jsonl, repo_root, write_json
from kgutils.models import load_model
from kgutils.prompts import ablation_messages

MODEL = "embedded:smollm2-135m-instruct"
SPLITS = "data/runs/02_teacher_labels/latest/splits"
SETTINGS = {"none": False, "copy": "copy", "once": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default=SPLITS, help="02's splits folder (train.jsonl, val.jsonl, test.jsonl)")
    ap.add_argument("--limit", type=int, default=16, help="first N test passages (07's cpu TEST_LIMIT)")
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--style", choices=("nl", "code"), default="nl")
    ap.add_argument("--rationale", action="store_true")
    ap.add_argument("--batch-size", type=int, default=16, help="07's cpu GEN_BATCH_SIZE")
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--demo-max-chars", type=int, default=700, help="07's DEMO_MAX_CHARS")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of: " + ", ".join(SETTINGS))
    args = ap.parse_args()
    wanted = [s.strip() for s in args.settings.split(",")]
    if unknown := [s for s in wanted if s not in SETTINGS]:
        raise SystemExit(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    try:
        train, val, test = (read_jsonl(Path(args.splits) / f"{n}.jsonl") for n in ("train", "val", "test"))
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}\nRun `make run ONLY=02` (or the whole study) first, or pass --splits.") from exc
    rows = test[: args.limit]
    pool = demo_pool(train, val + test, max_chars=args.demo_max_chars, seed=42)
    lm = for_inference(load_model(MODEL, for_family="qwen3"))
    demos = ablation_demos(rows, pool, args.shots)
    prompts = [render_messages(lm.tokenizer, ablation_messages(r, args.style, args.rationale, demos[str(r["id"])]))
               for r in rows]
    lengths = [len(lm.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    import torch

    print(f"{len(prompts)} prompts ({args.style}{'+r' if args.rationale else ''}, k = {args.shots}; "
          f"{min(lengths)}-{max(lengths)} tokens), batch {args.batch_size}, <= {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads; {lm.describe()}")
    results, texts = [], {}
    for name in wanted:
        t0 = time.perf_counter()
        gens = generate_texts(lm, prompts, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                              progress=False, guard="code" if args.style == "code" else True,
                              share_prefix=SETTINGS[name])
        seconds = time.perf_counter() - t0
        texts[name] = [g["text"] for g in gens]
        new = sum(g["n_new_tokens"] for g in gens)
        results.append({"setting": name, "seconds": round(seconds, 2), "new_tokens": new,
                        "new_tokens_per_second": round(new / seconds, 1)})
    ref = "copy" if "copy" in texts else wanted[0]
    print(f"{'setting':8s} {'seconds':>8s} {'new tokens':>10s} {'tokens/s':>9s} {'vs ' + ref:>8s} {'same answers':>13s}")
    base = next(r for r in results if r["setting"] == ref)
    for r in results:
        r["ratio"] = round(base["seconds"] / r["seconds"], 2)
        r["same_answers"] = sum(a == b for a, b in zip(texts[r["setting"]], texts[ref]))
        print(f"{r['setting']:8s} {r['seconds']:8.1f} {r['new_tokens']:10d} {r['new_tokens_per_second']:9.1f} "
              f"{'×%.2f' % r['ratio']:>8s} {r['same_answers']:>6d} of {len(prompts)}")
    out = repo_root() / "data" / "runs" / "bench_prefix" / time.strftime("%Y%m%d-%H%M%S")
    write_json(out / "prefix.json", {"model": MODEL, "settings": vars(args), "prompt_tokens": lengths,
                                     "results": results})
    print(f"written {out / 'prefix.json'}")


if __name__ == "__main__":
    main()

"""GPTQ CPU kernels side by side: new tokens/s of 05's 4-bit and 8-bit exports under each gptqmodel kernel.

A benchmark, not a test: it prints what it measures and never fails on a slow machine.

Folders: the GPTQ exports of the last 05 run (``data/runs/05_gemma_continue/latest/gptq-{4,8}bit``; run
``make run ONLY="01 02 05"`` first) or ``--folders`` (of one run). Prompts: the first ``--limit`` passages of that
run's test split (``test_spo.jsonl``), rendered with 05's SPO prompt, greedy, ``--max-new-tokens`` each,
unconstrained (so every kernel decodes the same number of steps unless a model ends early), in one batch.

Kernels per bit width (:data:`kgutils.export.CPU_KERNELS` first, then gptqmodel's generic ``gptq_torch``, which its
own ``auto`` choice picks on CPU): a kernel that cannot load a folder is reported, not fatal. Reported per folder
and kernel: load seconds, new tokens, seconds, new tokens/s, the ratio to the fastest kernel, and whether its
answers equal the first kernel's.

Run: ``python -m benchmarks.bench_gptq [--limit 4] [--max-new-tokens 24] [--folders DIR ...]``.
"""

from __future__ import annotations

import argparse
import json
import time

from kgutils import export
from kgutils.generate import generate_texts, render_messages
from kgutils.io import read_jsonl, resolve
from kgutils.prompts import spo_messages

KERNELS = {4: ("gptq_torch_fused", "gptq_torch"), 8: ("gptq_torch_int8", "gptq_torch")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="*", default=None, help="GPTQ folders (default: the last 05 run's)")
    parser.add_argument("--limit", type=int, default=4, help="test passages (one batch)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    if args.folders:
        folders = [resolve(f) for f in args.folders]
        run = folders[0].parent
    else:
        run = resolve("data/runs/05_gemma_continue/latest")
        folders = [run / "gptq-4bit", run / "gptq-8bit"]
    missing = [str(f) for f in folders if not (f / "quantize_config.json").is_file()]
    if missing:
        raise SystemExit(f"no GPTQ folder at {missing}: run `make run ONLY=\"01 02 05\"` first or pass --folders")
    rows = read_jsonl(run / "test_spo.jsonl")[: args.limit] if (run / "test_spo.jsonl").is_file() else []
    if not rows:
        raise SystemExit(f"no test passages in {run / 'test_spo.jsonl'}")

    print(f"GPTQ kernels on CPU: {len(rows)} passages in one batch, {args.max_new_tokens} new tokens each, greedy")
    head = f"{'folder':<12} {'kernel':<18} {'load s':>7} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'ratio':>6}"
    print(head + "  same")
    for folder in folders:
        bits = int(json.loads((folder / "quantize_config.json").read_text())["bits"])
        results = []
        for kernel in KERNELS.get(bits, ("auto",)):
            try:
                lm = export.load_gptq(folder, backend=kernel)
            except Exception as exc:  # noqa: BLE001 - report the kernel that cannot serve this folder
                print(f"{folder.name:<12} {kernel:<18} cannot load: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            prompts = [render_messages(lm.tokenizer, spo_messages(r["text"], r.get("title", ""), 8)) for r in rows]
            t0 = time.perf_counter()
            gens = generate_texts(lm, prompts, batch_size=len(prompts), max_new_tokens=args.max_new_tokens,
                                  progress=False, guard=False)
            seconds = time.perf_counter() - t0
            tokens = sum(g["n_new_tokens"] for g in gens)
            results.append((kernel, lm.load_seconds, tokens, seconds, [g["text"] for g in gens]))
            del lm
        best = max((t / s for _, _, t, s, _ in results), default=0.0)
        for kernel, load_s, tokens, seconds, texts in results:
            speed = tokens / seconds
            same = "yes" if texts == results[0][4] else "no"
            print(f"{folder.name:<12} {kernel:<18} {load_s:>7.1f} {tokens:>7} {seconds:>8.1f} {speed:>9.2f} "
                  f"{speed / best:>6.2f}  {same}")


if __name__ == "__main__":
    main()

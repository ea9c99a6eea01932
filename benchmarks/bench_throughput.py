"""Training and generation throughput of the 03 recipe, measured side by side in one run (a benchmark, not a test).

Training: the same LoRA SFT steps (SmolLM2-135M-Instruct stand-in, r 16 on all 7 projections, batch 4, the
extraction prompt of 03 on the committed sample passages) under a chain of settings, from a naive baseline to the
repository's default on this machine, one factor changed at a time:

1. ``naive``: every sequence padded to ``--max-length`` tokens, shuffled batches, TRL's loss (every position through
   the LM head in fp32 chunks), fp32;
2. ``dynamic``: padded to the longest sequence of each batch (TRL's default collator);
3. ``grouped``: + length-grouped batches (``sampling="group_by_length"``);
4. ``answer-head``: + the answer-only LM head (:func:`kgutils.train._answer_only_loss`, the CPU default);
5. ``bf16``: + bf16 autocast where the CPU has native bf16 (the CPU default when available).

Reported per setting: real (non-padding) tokens per second over the timed steps (the first step is a warm-up and
not timed), the padding share of the batches, seconds per step, and the ratio to ``naive``.

Generation: greedy decoding of the same passages with the base model, unbatched (one prompt at a time) vs batched
without and with length sorting, in passages per second and new tokens per second, and the ratio to unbatched.

Run: ``python -m benchmarks.bench_throughput [--steps 6] [--gen-passages 32]``. Writes
``data/runs/bench_throughput/<stamp>/throughput.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kgutils import train
from kgutils.generate import generate_texts, render_prompt
from kgutils.io import read_jsonl, repo_root, write_json
from kgutils.models import load_model

MODEL = "embedded:smollm2-135m-instruct"
PASSAGES = "data/sample/test.jsonl"  # committed: 66 passages with gold answers, the length mix of the study


def _step_timer():
    """A trainer callback that times every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t0)

    return StepTimer()


def _batch_tokens(trainer, n_batches: int) -> list[tuple[int, int]]:
    """(real tokens, padded tokens) of the first ``n_batches`` batches the trainer's dataloader yields."""
    out = []
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i >= n_batches:
            break
        mask = batch["attention_mask"]
        out.append((int(mask.sum()), int(mask.numel())))
    return out


def train_settings_chain(max_length: int) -> list[tuple[str, dict]]:
    naive = dict(pad_to_multiple_of=max_length, sampling="random", loss_impl="trl", precision="fp32")
    dynamic = {**naive, "pad_to_multiple_of": None}
    grouped = {**dynamic, "sampling": "group_by_length"}
    head = {**grouped, "loss_impl": "auto"}
    bf16 = {**head, "precision": "auto"}
    return [("naive", naive), ("dynamic", dynamic), ("grouped", grouped), ("answer-head", head), ("bf16", bf16)]


def bench_training(rows: list[dict], steps: int, batch_size: int, max_length: int, out: Path) -> list[dict]:
    results = []
    for name, opts in train_settings_chain(max_length):
        settings = train.TrainSettings(max_steps=steps, batch_size=batch_size, grad_accum=1, learning_rate=2e-4,
                                       warmup_steps=0, max_length=max_length, logging_steps=steps, save_steps=10_000,
                                       eval_steps=0, optim="adamw_torch", seed=0, **opts)
        timer = _step_timer()
        fit = train.train_sft(MODEL, rows, None, out / name, train.LoraSettings(r=16, alpha=32), settings,
                              for_family="qwen3", resume=False, callbacks=[timer])
        tokens = _batch_tokens(fit["trainer"], steps)
        timed = slice(1, steps)  # step 1 warms up kernels and caches
        real = sum(t[0] for t in tokens[timed])
        padded = sum(t[1] for t in tokens[timed])
        seconds = sum(timer.times[timed])
        results.append({"setting": name, **opts, "precision_used": fit["precision"],
                        "trainer": type(fit["trainer"]).__name__, "steps_timed": steps - 1,
                        "seconds": seconds, "seconds_per_step": seconds / (steps - 1), "real_tokens": real,
                        "padded_tokens": padded, "padding_share": 1 - real / padded, "tokens_per_s": real / seconds,
                        "train_loss": fit["train_loss"]})
        r = results[-1]
        print(f"  {name:12s} {r['tokens_per_s']:8.1f} real tokens/s  padding {100 * r['padding_share']:5.1f} %  "
              f"{r['seconds_per_step']:6.2f} s/step  (loss {r['train_loss']:.3f})", flush=True)
        del fit
    base = results[0]["tokens_per_s"]
    for r in results:
        r["ratio_to_naive"] = r["tokens_per_s"] / base
    return results


def bench_generation(rows: list[dict], n: int, batch_size: int, max_new_tokens: int) -> list[dict]:
    lm = load_model(MODEL, for_family="qwen3")
    prompts = [render_prompt(lm.tokenizer, r["text"]) for r in rows[:n]]
    runs = [("unbatched", 1, True), (f"batch {batch_size}, input order", batch_size, False),
            (f"batch {batch_size}, length-sorted", batch_size, True)]
    results = []
    for name, bs, sort in runs:
        t0 = time.perf_counter()
        gens = generate_texts(lm, prompts, batch_size=bs, max_new_tokens=max_new_tokens, progress=False,
                              sort_by_length=sort)
        seconds = time.perf_counter() - t0
        new = sum(g["n_new_tokens"] for g in gens)
        results.append({"setting": name, "batch_size": bs, "sorted": sort, "passages": len(prompts),
                        "seconds": seconds, "passages_per_s": len(prompts) / seconds, "new_tokens": new,
                        "new_tokens_per_s": new / seconds, "texts": [g["text"] for g in gens]})
        print(f"  {name:28s} {len(prompts) / seconds:6.3f} passages/s  {new / seconds:7.1f} new tokens/s  "
              f"({seconds:.1f} s, {new} new tokens)", flush=True)
    base, reference = results[0]["passages_per_s"], results[0]["texts"]
    for r in results:
        r["ratio_to_unbatched"] = r["passages_per_s"] / base
        # Greedy decoding in batches should give the unbatched answers (left padding can flip a near-tie).
        r["same_text_as_unbatched"] = sum(a == b for a, b in zip(r.pop("texts"), reference))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per training setting (first not timed)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024, help="the naive baseline pads every sequence to this")
    ap.add_argument("--gen-passages", type=int, default=32)
    ap.add_argument("--gen-batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-generation", action="store_true")
    args = ap.parse_args()
    rows = read_jsonl(repo_root() / PASSAGES)
    out = repo_root() / "data" / "runs" / "bench_throughput" / time.strftime("%Y%m%d-%H%M%S")
    report: dict = {"model": MODEL, "passages": PASSAGES, "settings": vars(args)}
    if not args.skip_training:
        print(f"Training throughput ({args.steps} steps per setting, batch {args.batch_size}, {MODEL}):")
        report["training"] = bench_training(rows, args.steps, args.batch_size, args.max_length, out)
        best = report["training"][-1]
        print(f"  default on this machine vs naive padded baseline: x{best['ratio_to_naive']:.2f} tokens/s")
    if not args.skip_generation:
        print(f"Generation throughput ({args.gen_passages} passages, greedy, {args.max_new_tokens} new tokens max):")
        report["generation"] = bench_generation(rows, args.gen_passages, args.gen_batch_size, args.max_new_tokens)
        last = report["generation"][-1]
        print(f"  length-sorted batches vs unbatched: x{last['ratio_to_unbatched']:.2f} passages/s; "
              f"{last['same_text_as_unbatched']}/{last['passages']} answers identical to the unbatched ones")
    write_json(out / "throughput.json", report)
    print(f"written {out / 'throughput.json'}")


if __name__ == "__main__":
    main()

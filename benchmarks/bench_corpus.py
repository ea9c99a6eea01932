"""Throughput of the corpus stage (chunking, length/language/quality filters, exact and MinHash dedup).

The passages are the sample corpus's paragraphs (``data/sample/raw/``, including its junk, non-English text and
duplicates), replicated and perturbed to 10k and 100k passages: each replica has its sentences shuffled and 15 %
of its words replaced by words drawn from the corpus vocabulary, so it is new text to the deduplicator; 5 % of
the passages are verbatim copies and 5 % are near copies (one word changed: a word 5-gram Jaccard of about 0.88,
above the 0.8 threshold) of earlier ones, so both dedup stages have work. Each passage is its own document.

Reports passages per second with one process and with one worker per core, and how time grows from 10k to 100k
(10.0 would be exactly linear). Target on the 2-core development machine: >= 5,000 passages/s, near-linear.

Run: ``python -m benchmarks.bench_corpus`` (or ``make bench``).
"""

from __future__ import annotations

import os
import random
import time

from kgutils import corpus
from kgutils.corpus import split_sentences


def synthetic_docs(n: int, seed: int = 0) -> list[dict]:
    """``n`` one-passage documents made from the sample corpus as described in the module docstring."""
    rng = random.Random(seed)
    paragraphs = [p for d in corpus.load_local("data/sample/raw") for p in corpus.chunk_document(d["text"])]
    vocab = sorted({w for p in paragraphs for w in p.split()})
    docs: list[dict] = []
    for i in range(n):
        roll = rng.random()
        if docs and roll < 0.05:
            text = rng.choice(docs)["text"]  # exact copy
        elif docs and roll < 0.10:
            words = rng.choice(docs)["text"].split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            text = " ".join(words)  # near copy
        else:
            sentences = split_sentences(rng.choice(paragraphs))
            rng.shuffle(sentences)
            words = " ".join(sentences).split()
            for j in range(len(words)):
                if rng.random() < 0.15:
                    words[j] = rng.choice(vocab)
            text = " ".join(words)
        docs.append({"doc_id": f"b{i}", "source": "bench", "title": "", "text": text})
    return docs


def measure(docs: list[dict], workers: int) -> tuple[float, corpus.CorpusResult]:
    t0 = time.perf_counter()
    result = corpus.build_corpus(docs, workers=workers, show_progress=False)
    return time.perf_counter() - t0, result


def main() -> None:
    cores = os.cpu_count() or 1
    print(f"corpus stage: filters + exact/near dedup ({cores} CPU cores)")
    print(f"{'passages':>9} {'workers':>7} {'seconds':>8} {'passages/s':>11}  removed (length, language, quality, "
          "exact, near)")
    times: dict[tuple[int, int], float] = {}
    for n in (10_000, 100_000):
        docs = synthetic_docs(n)
        for workers in (1, cores):
            seconds, result = measure(docs, workers)
            times[(n, workers)] = seconds
            removed = [row["removed"] for row in result.funnel[2:]]
            print(f"{n:>9,} {workers:>7} {seconds:>8.2f} {n / seconds:>11,.0f}  {removed}", flush=True)
            if cores == 1:
                break
    for workers in sorted({w for _, w in times}):
        growth = times[(100_000, workers)] / times[(10_000, workers)]
        print(f"time growth 10k -> 100k with {workers} worker(s): x{growth:.2f} (linear: x10)")


if __name__ == "__main__":
    main()

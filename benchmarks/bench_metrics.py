"""Scoring throughput of the Hungarian-matching evaluation at the card's test-set size (700 passages).

Predictions are derived from the sample set's gold triplets by seeded perturbations (dropped, renamed,
re-typed and re-weighted items, invented extra items), so the matrices and similarity computations are those
of a realistic run. Prints entries per second for each metric variant, measured in one run.
"""

from __future__ import annotations

import copy
import random
import time

from kgutils.io import read_jsonl
from kgutils.metrics import evaluate
from kgutils.ontology import RELATIONS
from kgutils.prompts import extraction_prompt


def perturbed_entries(n: int = 700, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = read_jsonl("data/sample/test.jsonl")
    entries = []
    for i in range(n):
        row = rows[i % len(rows)]
        gold = row["triplets"]
        pred = []
        for t in gold:
            if rng.random() < 0.2:
                continue  # missed
            t = copy.deepcopy(t)
            if rng.random() < 0.2:
                t["source"]["title"] = t["source"]["title"] + rng.choice([" Inc.", "s", " system", ""])
            if rng.random() < 0.2:
                t["relation"]["type"] = rng.choice(RELATIONS)
            t["relation"]["weight"] = round(min(1.0, max(0.0, t["relation"]["weight"] + rng.gauss(0, 0.15))), 2)
            pred.append(t)
        for _ in range(rng.randint(0, 2)):  # invented items
            pred.append({"source": {"title": f"thing {rng.randint(0, 99)}", "type": "entity"},
                         "relation": {"type": rng.choice(RELATIONS), "weight": 0.5},
                         "target": {"title": rng.choice(["Google", "Paris", "energy"]), "type": "concept"}})
        entries.append({"prompt": extraction_prompt(row["text"]), "gold": gold, "pred": pred})
    return entries


def main(n: int = 700, repeats: int = 3) -> None:
    entries = perturbed_entries(n)
    print(f"Hungarian-matching evaluation, {n} entries, bootstrap off (best of {repeats}):")
    for metric in ("hgr", "corrected"):
        best = min(_timed(entries, metric) for _ in range(repeats))
        print(f"  {metric:<10} {best:6.2f} s   {n / best:8.0f} entries/s")
    t0 = time.perf_counter()
    res = evaluate(entries, "hgr", n_resamples=1000)
    lo, hi = res["ci"]["composite"]
    print(f"  hgr with 1000 bootstrap resamples: {time.perf_counter() - t0:.2f} s "
          f"(composite {res['macro']['composite']:.4f} [{lo:.4f}, {hi:.4f}])")


def _timed(entries: list[dict], metric: str) -> float:
    t0 = time.perf_counter()
    evaluate(entries, metric, n_resamples=0)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

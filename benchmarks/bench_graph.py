"""Ingestion throughput of the graph store (``kgutils.graph``, ladybug): row-by-row MERGE against the bulk upsert.

Synthetic predictions stand in for a model's: passages of 5 triplets over a vocabulary of made-up two-word entity
names (one entity for every 4 triplets, drawn from a Zipf law so that a few hubs appear in many passages), the 20
relations drawn uniformly, weights in [0, 1]; 15 % of the mentions use a surface variant of the name (upper case,
a company suffix, a plural), 3 % repeat an item of the same answer and 2 % carry a relation outside the ontology.
The graph is built once per size (registry, fuzzy alias merges, aggregation: timed on its own) and then written by
each path into a fresh database:

* ``rows``: :meth:`GraphStore.upsert_rows`, one parameterised MERGE per node, passage, edge and mention, committed
  every 10,000 statements;
* ``bulk``: :meth:`GraphStore.bulk_upsert` with ``copy=False``: one ``LOAD FROM $df ... MERGE`` per table;
* ``bulk again``: the same graph upserted a second time into the populated database (reads the stored evidence,
  MERGEs onto existing rows; must leave the counts as they were);
* ``copy``: :meth:`GraphStore.bulk_upsert` on an empty database, ``COPY FROM`` DataFrames (append-only).

Throughput is triplets/s: the triplets kept in the graph (mentions) divided by the write's wall time, the reading
of stored evidence included. Row-by-row at 100k would take several minutes, so it is timed on a prefix of the
passages (said so in the output; ``--full-rows`` times all of it). Size on disk is the database file and its WAL
after closing.

Run: ``python -m benchmarks.bench_graph [--sizes 10000 100000] [--full-rows]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from kgutils.graph import Graph, GraphStore, build_graph
from kgutils.ontology import RELATIONS

SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vo", "sil", "dor", "ne", "pu", "qua", "bri", "zel", "fan", "gu", "hy",
             "jor", "wex", "tal", "cro"]  # fmt: skip
# Row-by-row runs on a prefix when the full size, extrapolated linearly from the previous size, would take longer
# than this (it grows faster than linearly: 680 triplets/s at 10k, 400 at 100k in the full run of the README).
ROW_BUDGET_S = 120.0


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def synthetic_entries(n_triplets: int, seed: int = 0, per_passage: int = 5) -> list[dict]:
    """Prediction entries (``id, text, model, pred``) holding about ``n_triplets`` items, as described above."""
    rng = random.Random(seed)
    n_entities = max(10, n_triplets // 4)
    names = sorted({f"{_word(rng).capitalize()} {_word(rng)}" for _ in range(n_entities)})
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(names))]
    rng.shuffle(names)

    def surface(name: str) -> str:
        roll = rng.random()
        if roll < 0.05:
            return name.upper()
        if roll < 0.10:
            return name + " Inc."
        if roll < 0.15:
            return name + "s"
        return name

    entries = []
    for p in range(max(1, n_triplets // per_passage)):
        pred = []
        for _ in range(per_passage):
            if pred and rng.random() < 0.03:
                pred.append(dict(pred[-1]))  # the answer repeats itself
                continue
            s, t = rng.choices(names, weights, k=2)
            rel = rng.choice(RELATIONS) if rng.random() >= 0.02 else "invented_by"
            pred.append({"source": {"title": surface(s), "type": "entity"},
                         "relation": {"type": rel, "weight": round(rng.random(), 2)},
                         "target": {"title": surface(t), "type": rng.choice(("entity", "concept"))}})
        entries.append({"id": f"b{p}", "text": f"synthetic passage {p}", "model": "bench", "pred": pred})
    return entries


def _size_mb(path: Path) -> float:
    files = [path, path.with_name(path.name + ".wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def _write(folder: Path, name: str, graph: Graph, mode: str) -> tuple[dict, dict, float]:
    db = folder / f"{name}.lbdb"
    with GraphStore(db) as store:
        if mode == "rows":
            res = store.upsert_rows(graph)
        elif mode == "copy":
            res = store.bulk_upsert(graph, copy=True)
        else:
            res = store.bulk_upsert(graph, copy=False)
            if mode == "bulk again":
                before = store.counts()
                res = store.bulk_upsert(graph, copy=False)
                if store.counts() != before:
                    raise RuntimeError("the second bulk upsert changed the counts: not idempotent")
        counts = store.counts()
    return res, counts, _size_mb(db)


def _row(label: str, triplets: int, res: dict, counts: dict, size: float, note: str = "") -> None:
    print(f"  {label:<11} {triplets:>9,} {res['seconds']:>9.2f} {triplets / res['seconds']:>12,.0f} "
          f"{counts['entities']:>8,} {counts['edges']:>8,} {size:>8.1f}  {note}", flush=True)


def main(sizes: tuple[int, ...] = (10_000, 100_000), full_rows: bool = False) -> None:
    print(f"graph ingestion into ladybug ({os.cpu_count()} CPU cores): triplets/s by write path")
    rate_rows: float | None = None
    with tempfile.TemporaryDirectory(prefix="bench_graph_") as tmp:
        folder = Path(tmp)
        for n in sizes:
            entries = synthetic_entries(n)
            t0 = time.perf_counter()
            graph = build_graph(entries)
            build_s = time.perf_counter() - t0
            r = graph.report
            print(f"\n{n:,} synthetic triplets: {r['passages']:,} passages, {r['kept']:,} kept, {r['nodes']:,} "
                  f"entities, {r['edges']:,} edges, {sum(r['alias_merges'].values()):,} alias merges, "
                  f"{sum(r['dropped'].values()):,} dropped; build_graph {build_s:.2f} s "
                  f"({r['triplets_in'] / build_s:,.0f} triplets/s)")
            print(f"  {'path':<11} {'triplets':>9} {'seconds':>9} {'triplets/s':>12} {'entities':>8} {'edges':>8} "
                  f"{'MB':>8}")
            rows_graph, note = graph, ""
            if not full_rows and rate_rows is not None and r["kept"] / rate_rows > ROW_BUDGET_S:
                share = max(0.1, ROW_BUDGET_S / 3 / (r["kept"] / rate_rows))
                prefix = entries[: int(len(entries) * share)]
                rows_graph = build_graph(prefix)
                note = (f"prefix: first {len(prefix):,} of {len(entries):,} passages (the full size would take "
                        f"about {r['kept'] / rate_rows:,.0f} s)")
            res, counts, size = _write(folder, f"rows{n}", rows_graph, "rows")
            _row("rows", rows_graph.report["kept"], res, counts, size, note)
            rate_rows = rows_graph.report["kept"] / res["seconds"]
            for mode in ("bulk", "bulk again", "copy"):
                res, counts, size = _write(folder, f"{mode.replace(' ', '_')}{n}", graph, mode)
                _row(mode, r["kept"], res, counts, size,
                     f"x{r['kept'] / res['seconds'] / rate_rows:.1f} rows" + (" (second upsert of the same graph)"
                                                                             if mode == "bulk again" else ""))


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="synthetic triplets")
    cli.add_argument("--full-rows", action="store_true", help="time row-by-row on every size in full")
    args = cli.parse_args()
    main(tuple(args.sizes), args.full_rows)

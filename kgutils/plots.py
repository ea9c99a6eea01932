"""Seaborn figures for evaluation results. Every function saves PNG files and returns the figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless under papermill and CI; notebooks still display the returned figure
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

AXIS_LABELS = {
    "schema": "schema",
    "entity_f1": "entity\nF1",
    "relation_acc": "relation\naccuracy",
    "weight": "weight",
    "grounding": "grounding",
    "composite": "composite",
}


def save(fig: Any, name: str, folders: Sequence[str | Path | None]) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` into every non-empty folder; returns the paths written."""
    from .io import resolve

    paths = []
    for folder in folders:
        if not folder:
            continue
        out = resolve(folder)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    return paths


def axis_scores(rows: Sequence[dict[str, Any]], title: str = "Hungarian-matching axes (macro, 95% CI)"):
    """Grouped bars of the macro axis scores per run/metric with bootstrap intervals as error bars.

    Args:
        rows: :func:`kgutils.evaluation.summary_row` dicts.
    """
    import numpy as np

    sns.set_theme(style="whitegrid", context="notebook")
    axes = list(AXIS_LABELS)
    groups = [f"{r['run']} [{r['metric']}, {r.get('parser', 'card')} parse]" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(axes) * (0.8 + 0.35 * len(rows))), 4.4))
    width = 0.8 / max(len(rows), 1)
    palette = sns.color_palette("deep", len(rows))
    x = np.arange(len(axes))
    for g, (row, label) in enumerate(zip(rows, groups)):
        vals = [row.get(a) if row.get(a) is not None else np.nan for a in axes]
        lo = [row.get(f"{a}_lo", np.nan) for a in axes]
        hi = [row.get(f"{a}_hi", np.nan) for a in axes]
        err = np.array(
            [[v - low if low is not None and not np.isnan(low) else 0 for v, low in zip(vals, lo)],
             [h - v if h is not None and not np.isnan(h) else 0 for v, h in zip(vals, hi)]]
        )  # fmt: skip
        err = np.clip(np.nan_to_num(err), 0, None)
        pos = x - 0.4 + width * (g + 0.5)
        ax.bar(pos, vals, width=width, color=palette[g], label=label, yerr=err, capsize=3)
        for px, v, up in zip(pos, vals, err[1]):
            if np.isnan(v):  # undefined for every entry (e.g. no entity matches): say so instead of a 0 bar
                ax.text(px, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="grey")
            else:
                ax.text(px, min(v + up + 0.02, 1.05), f"{v:.2f}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, [AXIS_LABELS[a] for a in axes])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def relation_confusion(frame: Any, title: str = "Relations of entity-matched pairs (gold × predicted)"):
    """Heatmap of a gold × predicted relation count table (:func:`kgutils.evaluation.relation_confusion`)."""
    sns.set_theme(style="white", context="notebook")
    if frame is None or getattr(frame, "empty", True):
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no entity-matched pairs: nothing to compare", ha="center", va="center")
        ax.set_title(title)
        return fig
    h, w = frame.shape
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * w + 3), max(3.5, 0.45 * h + 1.5)))
    sns.heatmap(frame, annot=True, fmt="d", cmap="Blues", cbar=False, linewidths=0.5, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reliability(results: Sequence[tuple[str, dict[str, Any]]], title: str = "Weight reliability"):
    """Reliability diagram: mean predicted weight vs. share of correct (full-match) predictions per bin.

    Args:
        results: ``(label, calibration)`` pairs, ``calibration`` as in ``metrics.evaluate(...)["calibration"]``.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    palette = sns.color_palette("deep", len(results))
    for (label, cal), color in zip(results, palette):
        ece = (cal or {}).get("ece")
        lab = f"{label} (ECE {ece:.3f}, n={cal.get('n')})" if ece is not None else label
        _reliability_curve(ax, (cal or {}).get("bins", []), lab, color, "o", size=180, alpha=0.35)
    return _reliability_finish(fig, ax, title, "predicted weight (bin mean)", "share of predictions that match gold",
                               legend_size=7)


def _reliability_curve(ax: Any, bins: Sequence[dict[str, Any]], label: str, color: Any, marker: str, *,
                       size: float, alpha: float) -> None:
    """One reliability curve: bin mean weight against bin accuracy, marker areas following the bin counts; empty
    bins are left out."""
    used = [b for b in bins if b.get("count")]
    if not used:
        return
    biggest = max(b["count"] for b in used)
    xs, ys = [b["mean_weight"] for b in used], [b["accuracy"] for b in used]
    ax.plot(xs, ys, marker=marker, color=color, label=label)
    ax.scatter(xs, ys, s=[20 + size * b["count"] / biggest for b in used], color=color, alpha=alpha)


def _reliability_finish(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str, legend_size: int) -> Any:
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size, loc="upper left")
    fig.tight_layout()
    return fig


def parse_status(rows: Sequence[tuple[str, dict[str, int]]], title: str = "Parse outcome of model outputs"):
    """Stacked horizontal bars of parse-status counts per run."""
    import pandas as pd

    sns.set_theme(style="whitegrid", context="notebook")
    frame = pd.DataFrame({label: counts for label, counts in rows}).fillna(0).T
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.6))
    frame.plot(kind="barh", stacked=True, ax=ax, colormap="tab10", width=0.6)
    ax.set_xlabel("passages")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def evaluation_figures(
    results: dict[tuple[str, str, str], dict[str, Any]], folders: Sequence[str | Path | None], prefix: str = "06_"
):
    """The evaluation notebook's four figures, saved into ``folders``.

    Args:
        results: :func:`kgutils.evaluation.score_files` output.
        folders: where to save the PNG files (empty entries are skipped).
        prefix: file-name prefix (the notebook number, so figures/ stays sorted by stage).

    Returns:
        ``[(name, figure, saved paths)]``: axis scores of every scored combination (of the card parse only when
        there are more than eight, so the bars stay readable); the relation confusion of the last file (the
        fine-tuned model in 03) under the first metric and the last parser (the robust parse by default, which sees
        the most predictions); weight reliability and parse outcomes of every file and parser under the first metric.
    """
    from . import evaluation

    keys = list(results)
    labels = list(dict.fromkeys(k[0] for k in keys))
    first_metric = keys[0][1]
    last_parser = keys[-1][2]
    rows = [evaluation.summary_row(res, label) for (label, _, _), res in results.items()]
    axis_title = "Hungarian-matching axes (macro, 95% CI)"
    if len(rows) > 8 and any(k[2] == "card" for k in keys):
        rows = [evaluation.summary_row(res, label) for (label, _, parser), res in results.items() if parser == "card"]
        axis_title += ", card parse"
    under_first = [(k, res) for k, res in results.items() if k[1] == first_metric]
    confusion_of = results[(labels[-1], first_metric, last_parser)]
    figures = [
        (f"{prefix}axis_scores", axis_scores(rows, title=axis_title)),
        (
            f"{prefix}relation_confusion",
            relation_confusion(
                evaluation.relation_confusion(confusion_of),
                title=f"Relations of entity-matched pairs, {labels[-1]} ({last_parser} parse)",
            ),
        ),
        (
            f"{prefix}weight_reliability",
            reliability([(f"{k[0]} [{k[2]} parse]", r["calibration"]) for k, r in under_first]),
        ),
        (f"{prefix}parse_status", parse_status([(f"{k[0]} [{k[2]}]", r["parse_status"]) for k, r in under_first])),
    ]
    return [(name, fig, save(fig, name, folders)) for name, fig in figures]


def _finish(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str | None = None, legend: bool = True) -> Any:
    """Labels, legend, despine and tight layout: the common end of the data and training plots."""
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend()
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def funnel(rows: Sequence[dict[str, Any]], title: str = "Corpus funnel", unit: str = "passages"):
    """Horizontal bars of what remains after each stage, labelled with what the stage removed.

    Args:
        rows: ``{"stage", "removed", "remaining"}`` dicts in pipeline order.
    """
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    stages = [r["stage"] for r in rows]
    remaining = [r["remaining"] for r in rows]
    palette = sns.color_palette("crest", len(rows))
    ax.barh(range(len(rows)), remaining, color=palette)
    top = max(remaining) if remaining else 1
    for i, r in enumerate(rows):
        note = f"{r['remaining']:,}" + (f"  (−{r['removed']:,})" if r.get("removed") else "")
        ax.text(r["remaining"] + top * 0.01, i, note, va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), stages)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)
    return _finish(fig, ax, title, unit, legend=False)


def relation_distribution(splits: dict[str, Sequence[dict]], title: str = "Relations per split"):
    """Counts of every ontology relation in each split (a relation that never occurs still gets a row)."""
    from collections import Counter

    from .ontology import RELATIONS

    names = list(splits)
    counts = {s: Counter(t["relation"]["type"] for e in exs for t in e["triplets"]) for s, exs in splits.items()}
    order = sorted(RELATIONS, key=lambda r: -sum(counts[s][r] for s in names))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    left = [0] * len(order)
    for s, color in zip(names, sns.color_palette("deep", len(names))):
        vals = [counts[s][r] for r in order]
        ax.barh(range(len(order)), vals, left=left, color=color, label=f"{s} ({sum(vals)})")
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    return _finish(fig, ax, title, "triplets", legend=False)


def triplets_per_passage(splits: dict[str, Sequence[dict]], title: str = "Triplets per passage"):
    """Share of passages with 0, 1, 2, … triplets in each split (0 = negatives)."""
    from collections import Counter

    fig, ax = plt.subplots(figsize=(7, 3.6))
    k_max = max((len(e["triplets"]) for exs in splits.values() for e in exs), default=0)
    xs = list(range(k_max + 1))
    width = 0.8 / max(len(splits), 1)
    for j, ((s, exs), color) in enumerate(zip(splits.items(), sns.color_palette("deep", len(splits)))):
        c = Counter(len(e["triplets"]) for e in exs)
        n = max(len(exs), 1)
        ax.bar([x + (j - (len(splits) - 1) / 2) * width for x in xs], [c[x] / n for x in xs], width,
               color=color, label=f"{s} (n={len(exs)})")
    ax.set_xticks(xs)
    return _finish(fig, ax, title, "triplets in the passage", "share of passages")


def loss_curve(log_history: Sequence[dict[str, Any]], title: str = "Training loss"):
    """Training loss per logged step and eval loss where it was computed (from ``trainer.state.log_history``)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if train:
        ax.plot(*zip(*train), label="train loss", color=sns.color_palette("deep")[0])
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color=sns.color_palette("deep")[1])
    return _finish(fig, ax, title, "optimizer step", "loss (answer tokens)")


def rc_scores(table: Any, title: str = "Positive-class micro-F1 per data set"):
    """Grouped bars: F1 of every decoding run (hue) on every data set, data sets grouped by domain.

    Args:
        table: :func:`kgutils.mixtune.score_table`'s per-data-set frame (``mode``, ``dataset``, ``domain``, ``f1``).
    """
    df = table.sort_values(["domain", "dataset"])
    n_ds = df["dataset"].nunique()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * n_ds + 2.5), 4.0))
    sns.barplot(data=df, x="dataset", y="f1", hue="mode", ax=ax, palette="deep",
                order=list(dict.fromkeys(df["dataset"])))
    ax.set_ylim(0, 1.05)
    labels = [f"{d}\n({df[df.dataset == d].domain.iloc[0]})" for d in dict.fromkeys(df["dataset"])]
    ax.set_xticks(range(len(labels)), labels)
    ax.legend(title=None, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(fig, ax, title, "", "positive-class micro-F1", legend=False)


def rc_per_class(per_class: Any, mode: str | None = None, title: str = "Per-class F1"):
    """Heat map of per-class F1 (rows: data set / label, columns: decoding runs); the negative class is left out.

    Args:
        per_class: :func:`kgutils.mixtune.score_table`'s per-class frame.
        mode: only this decoding run; None: every run as a column.
    """
    df = per_class[per_class["label"] != "none"]
    if mode is not None:
        df = df[df["mode"] == mode]
    grid = df.pivot_table(index=["dataset", "label"], columns="mode", values="f1")
    fig, ax = plt.subplots(figsize=(1.4 * grid.shape[1] + 4.0, 0.26 * grid.shape[0] + 1.5))
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="crest", cbar=False, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_yticks([i + 0.5 for i in range(grid.shape[0])], [f"{d} · {lab}" for d, lab in grid.index], fontsize=7)
    ax.set_ylabel("")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def stage_losses(stages: Sequence[tuple[str, Sequence[dict[str, Any]]]], title: str = "Training loss by stage"):
    """Loss curves of successive training stages on one step axis (each stage continues where the last ended).

    Args:
        stages: ``(label, log_history)`` pairs in training order.
    """
    fig, ax = plt.subplots(figsize=(7, 3.6))
    offset = 0
    colors = sns.color_palette("deep")
    for n, (label, hist) in enumerate(stages):
        train = [(offset + h["step"], h["loss"]) for h in hist if "loss" in h and "step" in h]
        evals = [(offset + h["step"], h["eval_loss"]) for h in hist if "eval_loss" in h and "step" in h]
        if train:
            ax.plot(*zip(*train), label=f"{label}: train", color=colors[2 * n % len(colors)])
        if evals:
            ax.plot(*zip(*evals), "o--", label=f"{label}: eval", color=colors[(2 * n + 1) % len(colors)])
        steps = [h["step"] for h in hist if "step" in h]
        if steps:
            offset += max(steps)
            ax.axvline(offset, color="0.7", lw=0.8)
    return _finish(fig, ax, title, "optimizer step (stages in sequence)", "loss (answer tokens)")


def spo_models(frame: Any, title: str = "Exact (s, p, o) F1 and failure modes by model"):
    """Two panels: strict micro exact (s, p, o) F1 with its bootstrap interval per model, and the failure modes
    (duplicate-fact rate, qualifier coverage, flattened-fact rate).

    Args:
        frame: one row per model with ``model``, ``f1``, ``f1_lo``, ``f1_hi`` and the rates of
            :func:`kgutils.evaluation.score_spo_file` (``duplicate_rate_with_guard``, ``qualifier_coverage``,
            ``qualifier_recall``, ``flattened_rate``; undefined rates are left out).
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    names = list(frame["model"])
    colors = sns.color_palette("deep", len(names))
    f1 = frame["f1"].to_numpy(dtype=float)
    err = [f1 - frame["f1_lo"].to_numpy(dtype=float), frame["f1_hi"].to_numpy(dtype=float) - f1]
    ax1.bar(range(len(names)), f1, yerr=err, color=colors, capsize=3)
    ax1.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("strict micro F1 (95% CI)")
    ax1.set_ylim(0, max(0.05, float(frame["f1_hi"].max()) * 1.15))
    measures = [c for c in ("duplicate_rate_with_guard", "qualifier_coverage", "qualifier_recall", "flattened_rate")
                if c in frame]
    long = frame.melt(id_vars="model", value_vars=measures, var_name="measure", value_name="rate").dropna()
    long["measure"] = long["measure"].str.replace("_with_guard", " (guard incl.)").str.replace("_", " ")
    sns.barplot(data=long, x="measure", y="rate", hue="model", hue_order=names, palette=colors, ax=ax2)
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("")
    if long.empty:
        ax2.text(0.5, 0.5, "no rate defined (no predicted or gold triples)", ha="center", va="center",
                 transform=ax2.transAxes, fontsize=8)
    else:
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ablation_heatmap(summary: Any, metric: str = "hgr", title: str = "Prompt ablation grid"):
    """A heatmap of 07's grid: one row per model and tuning, one column per prompt format and k, the cell's macro
    ``metric`` composite annotated (blank where a cell did not run).

    Args:
        summary: :func:`kgutils.evaluation.ablation_scores`' per-cell frame.
    """
    frame = summary.assign(row=summary["model"] + " · " + summary["tuning"],
                           col=summary["prompt"] + " @" + summary["k"].astype(str))
    cols = sorted(frame["col"].unique(), key=lambda c: (int(c.rsplit("@", 1)[1]), c))
    rows = list(dict.fromkeys(frame.sort_values(["model", "tuning"], key=lambda s: s.map(str))["row"]))
    grid = frame.pivot_table(index="row", columns="col", values=metric, aggfunc="mean").reindex(index=rows,
                                                                                               columns=cols)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(cols) + 2.5), max(2.4, 0.55 * len(rows) + 1.4)))
    sns.heatmap(grid.astype(float), annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=max(0.05, float(
        np.nanmax(grid.to_numpy(dtype=float))) if grid.notna().any().any() else 1.0), linewidths=0.5,
        cbar_kws={"label": f"{metric} composite"}, ax=ax, annot_kws={"fontsize": 7})
    ax.set_xlabel("prompt format @ in-context examples (k)")
    ax.set_ylabel("")
    ax.tick_params(axis="x", labelsize=8, rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def ablation_shots(summary: Any, metric: str = "hgr", title: str = "Composite over in-context examples"):
    """Lines over k: one line per (model, tuning, prompt format) that ran at two k or more, with the cell's
    bootstrap interval as error bars.

    Args:
        summary: :func:`kgutils.evaluation.ablation_scores`' per-cell frame.
    """
    frame = summary.assign(line=summary["model"] + " · " + summary["tuning"] + " · " + summary["prompt"])
    counts = frame.groupby("line")["k"].nunique()
    frame = frame[frame["line"].isin(counts[counts > 1].index)].sort_values("k")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    colors = sns.color_palette("deep", max(1, frame["line"].nunique()))
    for color, (line, part) in zip(colors, frame.groupby("line", sort=True)):
        y = part[metric].to_numpy(dtype=float)
        lo, hi = part[f"{metric}_lo"].to_numpy(dtype=float), part[f"{metric}_hi"].to_numpy(dtype=float)
        ax.errorbar(part["k"], y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], marker="o", capsize=3,
                    label=line, color=color, linestyle="--" if " ft" not in line else "-")
    ks = sorted(summary["k"].unique())
    ax.set_xticks(ks)
    if frame.empty:
        ax.text(0.5, 0.5, "no prompt format ran at two values of k", ha="center", va="center",
                transform=ax.transAxes)
        return _finish(fig, ax, title, "in-context examples (k)", f"{metric} composite (95% CI)", legend=False)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(fig, ax, title, "in-context examples (k)", f"{metric} composite (95% CI)", legend=False)


def ablation_effects(findings: Any, title: str = "Seed findings: paired effects (95% bootstrap CI)"):
    """A forest plot of 07's findings table: each comparison's effect (b − a) with its interval, coloured by the
    verdict; the pooled rows in bold.

    Args:
        findings: :func:`kgutils.evaluation.ablation_findings`' table.
    """
    frame = findings.dropna(subset=["effect"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(frame) + 1.2)))
    palette = {"supported": "#2a9d8f", "refuted": "#e76f51", "inconclusive": "#8d99ae", "not tested": "#cccccc"}
    labels = []
    for i, r in frame.iterrows():
        ax.errorbar(r["effect"], i, xerr=[[r["effect"] - r["ci_lo"]], [r["ci_hi"] - r["effect"]]], fmt="o",
                    color=palette.get(r["verdict"], "k"), capsize=3)
        labels.append(f"{r['finding']} {r['scope']}" if r["a"].startswith("model=") else
                      f"{r['finding']} {r['b']} vs {r['a']} ({r['scope']})")
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(frame)), labels, fontsize=7)
    for tick, scope in zip(ax.get_yticklabels(), frame["scope"]):
        tick.set_fontweight("bold" if scope == "pooled" else "normal")
    ax.invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in palette.items()
               if v in set(frame["verdict"])]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(fig, ax, title, "effect on the per-passage composite (b − a)", legend=False)


def reliability_diagram(before_bins: Sequence[dict[str, Any]], after_bins: Sequence[dict[str, Any]], ax: Any = None,
                        labels: tuple[str, str] = ("model weight", "calibrated"),
                        title: str = "Reliability before and after calibration"):
    """Reliability of weights before and after calibration on one diagram (08).

    Args:
        before_bins, after_bins: bins of :func:`kgutils.metrics.calibration_summary` (``mean_weight``,
            ``accuracy``, ``count``), e.g. ``report["before"]["bins"]`` of :func:`kgutils.graph.calibration_report`.
        ax: draw into this axes (a new figure when ``None``).
        labels: legend labels of the two curves.
        title: axes title.

    Returns:
        The figure. Marker areas follow the bin counts; empty bins are left out.
    """
    if ax is None:
        sns.set_theme(style="whitegrid", context="notebook")
        fig, ax = plt.subplots(figsize=(5.2, 4.8))
    else:
        fig = ax.figure
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for bins, label, color, marker in ((before_bins, labels[0], sns.color_palette("deep")[3], "o"),
                                       (after_bins, labels[1], sns.color_palette("deep")[0], "s")):
        n = sum(b["count"] for b in bins if b.get("count"))
        _reliability_curve(ax, bins, f"{label} (n={n})", color, marker, size=200, alpha=0.3)
    return _reliability_finish(fig, ax, title, "predicted probability (bin mean)", "share correct (matched to gold)",
                               legend_size=8)


def degree_distribution(degrees: Sequence[int] | Any, ax: Any = None, title: str = "Degree distribution"):
    """Number of entities per degree, on log-log axes (08).

    Args:
        degrees: one degree per entity (e.g. ``GraphStore.degrees()["degree"]`` or ``Graph.degrees()["degree"]``);
            entities of degree 0 are counted in the caption only (a log axis has no 0).
        ax: draw into this axes (a new figure when ``None``).
        title: axes title.

    Returns:
        The figure.
    """
    from collections import Counter

    values = [int(d) for d in degrees]
    counts = Counter(d for d in values if d > 0)
    if ax is None:
        sns.set_theme(style="whitegrid", context="notebook")
        fig, ax = plt.subplots(figsize=(5.6, 4.2))
    else:
        fig = ax.figure
    if counts:
        xs = sorted(counts)
        ax.scatter(xs, [counts[x] for x in xs], color=sns.color_palette("deep")[0], s=28)
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no edges", ha="center", va="center", transform=ax.transAxes)
    n_zero = sum(1 for d in values if d == 0)
    ax.set_xlabel("degree (relation edges, either direction)")
    ax.set_ylabel("entities")
    ax.set_title(f"{title}\n{len(values)} entities, mean degree {np.mean(values) if values else 0:.2f}"
                 + (f", {n_zero} isolated" if n_zero else ""), fontsize=10)
    fig.tight_layout()
    return fig


def draw_subgraph(edges: Any, center: str | None = None, ax: Any = None, max_edges: int = 40, seed: int = 0,
                  title: str = "Subgraph"):
    """Draw a small subgraph: entities as labelled points, edges as arrows labelled with the relation, the arrow
    width and darkness following the calibrated confidence (08).

    Args:
        edges: a frame with ``source, target, relation, source_title, target_title, calibrated`` (e.g.
            ``GraphStore.neighbourhood(...)`` or rows of ``Graph.edges``); the ``max_edges`` most confident edges
            are drawn.
        center: id of an entity to highlight (the neighbourhood's centre).
        ax: draw into this axes (a new figure when ``None``).
        max_edges: most edges drawn.
        seed: layout seed.
        title: axes title.

    Returns:
        The figure. The layout is networkx's spring layout when networkx is installed, else a circle.
    """
    sns.set_theme(style="white", context="notebook")
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 6.5))
    else:
        fig = ax.figure
    ax.axis("off")
    ax.set_title(title)
    if edges is None or len(edges) == 0:
        ax.text(0.5, 0.5, "no edges", ha="center", va="center", transform=ax.transAxes)
        return fig
    frame = edges.sort_values("calibrated", ascending=False).head(max_edges)
    titles: dict[str, str] = {}
    for s, st, t, tt in zip(frame["source"], frame["source_title"], frame["target"], frame["target_title"]):
        titles.setdefault(s, st)
        titles.setdefault(t, tt)
    ids = list(titles)
    try:
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(ids)
        g.add_edges_from(zip(frame["source"], frame["target"]))
        pos = {k: np.asarray(v) for k, v in nx.spring_layout(g, seed=seed, k=1.5 / max(len(ids), 1) ** 0.5).items()}
    except ImportError:
        angles = np.linspace(0, 2 * np.pi, len(ids), endpoint=False)
        pos = {i: np.array([np.cos(a), np.sin(a)]) for i, a in zip(ids, angles)}
    cmap = plt.get_cmap("Blues")
    for s, t, rel, c in zip(frame["source"], frame["target"], frame["relation"], frame["calibrated"]):
        c = float(c)
        ax.annotate("", xy=pos[t], xytext=pos[s], arrowprops={"arrowstyle": "-|>", "color": cmap(0.35 + 0.65 * c),
                                                             "lw": 0.6 + 2.4 * c, "shrinkA": 8, "shrinkB": 8})
        mid = (pos[s] + pos[t]) / 2
        ax.text(mid[0], mid[1], rel, fontsize=6.5, color="0.25", ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    for i in ids:
        is_center = i == center
        ax.scatter(*pos[i], s=220 if is_center else 90, color=sns.color_palette("deep")[3 if is_center else 0],
                   zorder=3, edgecolors="white")
        ax.text(pos[i][0], pos[i][1] + 0.06, titles[i][:40], fontsize=8, ha="center", va="bottom", zorder=4,
                fontweight="bold" if is_center else "normal",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    xy = np.array(list(pos.values()))
    pad = 0.25
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    fig.tight_layout()
    return fig

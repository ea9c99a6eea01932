"""Command line: ``python -m kgutils {run,evaluate,label,params,schema,calibrate,ingest}``."""

from __future__ import annotations

import argparse
import json
import sys

from . import runner


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_file
    from .io import write_json

    try:
        result = evaluate_file(args.file, metric=args.metric, parser=args.parser, n_resamples=args.bootstrap)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in result.items() if k != "per_entry"}
    if args.out:
        path = write_json(args.out, {"summary": summary, "per_entry": result["per_entry"]})
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({"metric": result["metric"], "n": result["n"], "macro": result["macro"],
                      "micro": result["micro"], "ci": result.get("ci"),
                      "parse_failure_rate": result["parse_failure_rate"]}, indent=2, default=float))  # fmt: skip
    return 0


def _label(args: argparse.Namespace) -> int:
    from .corpus import load_passages
    from .teacher import TeacherCache, TeacherConfig, estimate_cost, label_passages, pending

    try:
        passages = load_passages(args.passages, args.limit)
        config = TeacherConfig(base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                               price_input_per_m=args.price_input, price_output_per_m=args.price_output,
                               concurrency=args.concurrency, max_retries=args.max_retries, timeout_s=args.timeout,
                               backoff_base_s=args.backoff, json_mode=not args.no_json_mode)
        with TeacherCache(args.cache) as cache:
            todo = [p["text"] for p in pending(passages, config, cache)]
            print("estimate:", json.dumps(estimate_cost(todo, config, cached=len(passages) - len(todo))),
                  file=sys.stderr, flush=True)
            report = label_passages(passages, config, cache, show_progress=not args.no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.summary(), indent=2))
    return 1 if report.failed else 0


def _params(args: argparse.Namespace) -> int:
    try:
        for path in runner.select_notebooks(args.only):
            print(f"{path.stem}:")
            for p in runner.read_parameters(path).values():
                opt = " | None" if p.optional and p.type != "any" else ""
                print(f"  {p.name}: {p.type}{opt} = {p.default!r}" + (f"  # {p.help}" if p.help else ""))
    except runner.ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _schema(args: argparse.Namespace) -> int:
    from .ontology import extraction_json_schema

    text = json.dumps(extraction_json_schema(), indent=2)
    if args.out:
        from .io import resolve

        resolve(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .graph import calibration_outcomes, crossfit_report, fit_calibrator

    try:
        outcomes = calibration_outcomes(args.predictions, metric=args.metric, parser=args.parser)
        if len(outcomes) < 2:
            raise ValueError(f"{len(outcomes)} scored prediction(s) in {', '.join(args.predictions)}: "
                             "a calibrator needs at least 2 (and gold in the files)")
        calibrator = fit_calibrator(outcomes["weight"], outcomes["correct"], args.method)
        path = calibrator.save(args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {"calibrator": str(path), "method": calibrator.method, "n": calibrator.n,
               "n_correct": calibrator.n_correct, "skipped_without_gold": outcomes.attrs["skipped_without_gold"]}
    try:  # an honest "after": each passage mapped by a calibrator fitted on the other folds
        rep = crossfit_report(outcomes, args.method, args.folds, n_resamples=args.bootstrap)
        summary["crossfit"] = {"folds": args.folds, "ece_before": rep["before"]["ece"],
                               "ece_after": rep["after"]["ece"], "brier_before": rep["before"]["brier"],
                               "brier_after": rep["after"]["brier"], "ci": rep["ci"]}
    except ValueError as exc:
        summary["crossfit"] = f"not computed: {exc}"
    print(json.dumps(summary, indent=2, default=float))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from .graph import ingest

    try:
        report = ingest(args.predictions, args.db, calibrator=args.calibrator, neo4j_out=args.neo4j_out,
                        parser=args.parser, fuzzy_threshold=None if args.no_fuzzy else args.fuzzy_threshold,
                        write=args.write, show_progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kgutils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run the notebooks in order with papermill")
    runner.add_arguments(p_run)
    p_run.set_defaults(func=runner.main_run)

    from .metrics import METRICS

    p_eval = sub.add_parser("evaluate", help="score a predictions JSONL file")
    p_eval.add_argument("file", help="predictions JSONL (repository or card layout)")
    p_eval.add_argument("--metric", default="hgr", choices=METRICS, help="hgr (the card's, default) or corrected")
    p_eval.add_argument("--parser", default="card", choices=("card", "robust"), help="which parse of the output")
    p_eval.add_argument("--out", help="write per-entry scores and the summary here (JSON)")
    p_eval.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p_eval.set_defaults(func=_evaluate)

    p_label = sub.add_parser("label", help="label passages with a teacher over an OpenAI-compatible endpoint")
    p_label.add_argument("passages", help="passages: a Dataset folder from 01_corpus or a JSONL file (id, text)")
    p_label.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. https://api.deepseek.com")
    p_label.add_argument("--model", required=True, help="teacher model name")
    p_label.add_argument("--api-key-env", default="DEEPSEEK_API_KEY",
                         help="environment variable holding the key ('' for none)")
    p_label.add_argument("--cache", default="data/cache/teacher.sqlite", help="SQLite answer cache")
    p_label.add_argument("--limit", type=int, default=0, help="first N passages only")
    p_label.add_argument("--concurrency", type=int, default=8)
    p_label.add_argument("--max-retries", type=int, default=6)
    p_label.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p_label.add_argument("--backoff", type=float, default=1.0, help="base of the exponential backoff in seconds")
    p_label.add_argument("--price-input", type=float, default=0.14, help="USD per million prompt tokens")
    p_label.add_argument("--price-output", type=float, default=0.28, help="USD per million completion tokens")
    p_label.add_argument("--no-json-mode", action="store_true", help="do not send response_format json_object")
    p_label.add_argument("--no-progress", action="store_true")
    p_label.set_defaults(func=_label)

    p_params = sub.add_parser("params", help="list each notebook's parameters, types and defaults")
    p_params.add_argument("--only", nargs="+", metavar="NN")
    p_params.set_defaults(func=_params)

    p_schema = sub.add_parser("schema", help="print the JSON Schema of the extraction output")
    p_schema.add_argument("--out", help="write it to this file instead")
    p_schema.set_defaults(func=_schema)

    p_cal = sub.add_parser("calibrate", help="fit a weight calibrator on scored predictions (JSON file)")
    p_cal.add_argument("predictions", nargs="+", help="predictions JSONL file(s) with gold (not the ones it scores)")
    p_cal.add_argument("--out", required=True, help="calibrator JSON to write")
    p_cal.add_argument("--method", default="isotonic", choices=("isotonic", "platt"))
    p_cal.add_argument("--metric", default="hgr", choices=METRICS, help="which alignment decides correctness")
    p_cal.add_argument("--parser", default="robust", choices=("card", "robust"), help="which parse of the output")
    p_cal.add_argument("--folds", type=int, default=5, help="cross-fitting folds (by passage) for the report")
    p_cal.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p_cal.set_defaults(func=_calibrate)

    p_ing = sub.add_parser("ingest", help="predictions -> canonical, calibrated graph in an embedded graph database")
    p_ing.add_argument("predictions", nargs="+", help="predictions JSONL file(s)")
    p_ing.add_argument("--db", required=True, help="ladybug database file (created when missing)")
    p_ing.add_argument("--calibrator", help="calibrator JSON (python -m kgutils calibrate); default: raw weights")
    p_ing.add_argument("--neo4j-out", help="also write neo4j-admin import CSVs and a MERGE script here")
    p_ing.add_argument("--parser", default="robust", choices=("card", "robust"), help="which parse of the output")
    p_ing.add_argument("--fuzzy-threshold", type=float, default=92.0,
                       help="rapidfuzz token_sort_ratio (0-100) for alias merges")
    p_ing.add_argument("--no-fuzzy", action="store_true", help="merge aliases by normalised title only")
    p_ing.add_argument("--write", default="bulk", choices=("bulk", "rows"),
                       help="bulk: LOAD FROM DataFrames (COPY into an empty database); rows: one MERGE per row")
    p_ing.add_argument("--no-progress", action="store_true")
    p_ing.set_defaults(func=_ingest)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

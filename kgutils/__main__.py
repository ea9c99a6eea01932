"""Command line: ``python -m kgutils {run,evaluate,params,schema}``."""

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

    p_params = sub.add_parser("params", help="list each notebook's parameters, types and defaults")
    p_params.add_argument("--only", nargs="+", metavar="NN")
    p_params.set_defaults(func=_params)

    p_schema = sub.add_parser("schema", help="print the JSON Schema of the extraction output")
    p_schema.add_argument("--out", help="write it to this file instead")
    p_schema.set_defaults(func=_schema)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

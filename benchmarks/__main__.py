"""Run every benchmark: ``python -m benchmarks`` (or ``make bench``)."""

from . import bench_corpus, bench_graph, bench_metrics


def main() -> None:
    bench_metrics.main()
    print()
    bench_corpus.main()
    print()
    bench_graph.main()


if __name__ == "__main__":
    main()

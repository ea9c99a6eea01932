"""Run every benchmark: ``python -m benchmarks`` (or ``make bench``)."""

from . import bench_metrics


def main() -> None:
    bench_metrics.main()


if __name__ == "__main__":
    main()

"""``python -m worker_runtime`` and the ``worker-runtime`` console script."""

import sys


def main(argv: "list[str] | None" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "probe":
        # The kubelet runs this every few seconds: parse by hand, skip argparse.
        from .probe import main as probe_main  # noqa: PLC0415 - the probe path skips argparse and the rest

        return probe_main(argv[1:])
    from .cli import main as cli_main  # noqa: PLC0415

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())

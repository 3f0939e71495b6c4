import sys


def main() -> int:
    from .cli import main as cli_main  # noqa: PLC0415 - `python -m` entry point stays import-light

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

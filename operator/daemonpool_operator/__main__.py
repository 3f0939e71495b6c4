import importlib.util
import sys

# What the operator imports that a runtime-only install (`pip install daemonpool`) lacks.
_EXTRA = ("kopf", "kubernetes", "pydantic", "yaml", "prometheus_client")


def main() -> int:
    missing = [m for m in _EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        # Not a traceback: the wheel ships this command with the runtime, and its extra may simply be absent.
        print(
            f"daemonpool-operator: {', '.join(missing)} not installed; the operator needs its extra: "
            "pip install 'daemonpool[operator]' (the worker runtime alone needs nothing)",
            file=sys.stderr,
        )
        return 2
    from .cli import main as cli_main  # noqa: PLC0415 - `python -m` entry point stays import-light

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

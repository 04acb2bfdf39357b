"""`python -m minimodels data` builds the offline corpus cache; `python -m minimodels train` trains a baseline."""

import sys

from . import cli, data

COMMANDS = {"data": data.main, "train": cli.main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        sys.exit(f"usage: python -m minimodels {{{','.join(COMMANDS)}}} [options]  (add --help after a command)")
    sys.exit(COMMANDS[argv[0]](argv[1:]))  # each command returns its exit code (None counts as 0)


if __name__ == "__main__":
    main()

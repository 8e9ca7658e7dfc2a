"""The `r2r` command: `r2r serve SYSTEM_DIR ...` (see `r2r serve --help`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="r2r", description=__doc__)
    parser.add_argument("command", choices=["serve"], help="serve: a saved system over HTTP")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    args = parser.parse_args(argv)
    # Imported on use: each command pulls in only its own dependencies.
    from r2r.serve import main as serve

    return serve(args.args)


if __name__ == "__main__":
    raise SystemExit(main())

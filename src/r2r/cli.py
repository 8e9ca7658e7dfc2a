"""The `r2r` command: `r2r serve SYSTEM_DIR ...` (a saved system over HTTP) and `r2r export
SYSTEM_DIR OUT` (each expert as a sentence-transformers CrossEncoder folder); see
`r2r <command> --help`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

COMMANDS = {
    "serve": "a saved system over HTTP (python -m r2r.serve)",
    "export": "each expert merged, as a CrossEncoder folder (python -m r2r.export)",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="r2r", description=__doc__)
    parser.add_argument(
        "command",
        choices=list(COMMANDS),
        help="; ".join(f"{name}: {what}" for name, what in COMMANDS.items()),
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    args = parser.parse_args(argv)
    # Imported on use: each command pulls in only its own dependencies.
    if args.command == "export":
        from r2r.export import main as export

        return export(args.args)
    from r2r.serve import main as serve

    return serve(args.args)


if __name__ == "__main__":
    raise SystemExit(main())

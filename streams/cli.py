"""The `python -m streams` command line: subcommands, each with its own --help."""
from __future__ import annotations

import argparse
import sys

from streams import backup_cli, health_check, local_mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams",
                                     description="Run and operate the homelab's NATS JetStream.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local_mode.add_parser(sub)
    backup_cli.add_parsers(sub)
    health_check.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C outside the commands' own handling (imports, S3 listing): no traceback
        print("stopped by SIGINT", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

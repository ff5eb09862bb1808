"""The `python -m streams` command line: one module per subcommand group, each with its own --help:
`dev` (make dev), `backup` (backup, list-backups, restore, prune, verify), `check`, `report`, `cluster`
(status, grow, shrink)."""
from __future__ import annotations

import argparse
import sys

from streams.cli import backup, check, cluster, dev, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams",
                                     description="Run and operate the homelab's NATS JetStream.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev.add_parser(sub)
    backup.add_parsers(sub)
    check.add_parser(sub)
    report.add_parser(sub)
    cluster.add_parser(sub)
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

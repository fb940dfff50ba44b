"""The ``reqrep`` command line (``python -m reqrep`` or the ``reqrep`` script).

Each subcommand is an ``add_<name>`` function that declares its arguments and a
``cmd_<name>`` function that runs it; ``build_parser`` lists the subcommands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reqrep._stats_cli import add_parser as add_stats
from reqrep.bridge._cli import add_parser as add_bridge


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="run the side-by-side benchmark suite",
        description=(
            "Round trips per second of reqrep and its peers (pipes, sockets, "
            "multiprocessing, TCP, and pyzmq/sysv_ipc/faster-fifo when installed), each "
            "row in fresh processes, median of several runs, with the ratio to the "
            "fastest peer. Progress goes to stderr, the table to stdout."
        ),
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer runs and shorter timing (about a minute in all)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument(
        "--rows",
        metavar="IDS",
        help="comma-separated row ids or shell patterns, e.g. 'pipe,reqrep-int' "
        "or 'mpmc-*' (see --list)",
    )
    p.add_argument(
        "--core",
        action="store_true",
        help="also build and run the C micro-benchmark of the core "
        "(needs a source checkout and a C compiler)",
    )
    p.add_argument("--list", action="store_true", help="list the row ids and exit")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from reqrep.bench import list_rows, run_suite

    if args.list:
        list_rows(sys.stdout)
        return 0
    patterns = [p.strip() for p in args.rows.split(",") if p.strip()] if args.rows else None
    return run_suite(quick=args.quick, patterns=patterns, json_path=args.json, with_core=args.core)


# Subcommands, in --help order. A new one (e.g. ``stats PATH [--json]``) adds its
# ``add_<name>``/``cmd_<name>`` pair above and its ``add_<name>`` here.
SUBCOMMANDS = (add_bench, add_stats, add_bridge)


def build_parser() -> argparse.ArgumentParser:
    from reqrep import __version__

    parser = argparse.ArgumentParser(
        prog="reqrep", description="Shared-memory request/response IPC for Linux: tools."
    )
    parser.add_argument("--version", action="version", version=f"reqrep {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        sys.stderr.write("reqrep: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())

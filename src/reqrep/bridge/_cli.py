"""``python -m reqrep bridge serve|forward``: the bridges as long-running commands.

Connects, reconnects and errors are logged to stderr; ``--stats SECONDS`` adds a
one-line rate every so often. SIGTERM or SIGINT stops cleanly (stop taking, answer
what was taken, exit 0); a second one stops at once (exit 1); one while starting
stops at once (exit 0: nothing was taken).

Exit status: 0 after a clean stop; 1 after a second signal; 2 for a bad command line;
66 when the channel cannot be opened; 69 when no NATS server answers (or NATS closed
the connection for good); 77 when NATS refuses the credentials (at the start or on a
reconnect); 78 for unusable settings (a missing file, TLS not offered).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from reqrep.bridge._common import check_queue, check_subject

EX_NOINPUT = 66


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bridge",
        help="extend a channel over NATS (needs reqrep[nats])",
        description="Extend a channel over NATS. 'serve': local workers answer NATS "
        "requests on a subject. 'forward': local clients' requests go to the workers "
        "behind a NATS subject. Credentials come from a file (--creds) or the "
        "environment (NATS_TOKEN, or NATS_USER and NATS_PASSWORD), never from the "
        "command line.",
    )
    roles = p.add_subparsers(title="roles", metavar="ROLE", required=True)
    serve = roles.add_parser(
        "serve", help="answer NATS requests with the local channel's workers",
        description="Answer the NATS requests on SUBJECT (in a queue group: bridges on "
        "one subject share them) by sending each into the channel at PATH as a client.")
    _common(serve)
    serve.add_argument("--queue", default="reqrep", metavar="GROUP", type=_argument(check_queue),
                       help="the NATS queue group (default: %(default)s)")
    serve.add_argument("--wait", type=_seconds, metavar="S",
                       help="wait up to S seconds for the workers to create the channel")
    serve.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                       help="answer a request with TimeoutError when the channel's "
                       "worker takes longer (default: %(default)s)")
    serve.set_defaults(func=cmd_serve)
    fwd = roles.add_parser(
        "forward", help="be a worker of the local channel that asks NATS",
        description="Be a worker of the channel at PATH that hands each request to the "
        "workers behind SUBJECT. The channel is created if there is none (a Str channel, "
        "or as --int/--codec and the sizes say).")
    _common(fwd)
    fwd.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                     help="reply RemoteError when no answer comes in S seconds "
                     "(default: %(default)s)")
    fwd.add_argument("--int", action="store_true", help="create an Int channel")
    fwd.add_argument("--codec", help="create the channel with this codec (pickle, json)")
    for size in ("req-cap", "resp-slots", "resp-size", "arena"):
        fwd.add_argument(f"--{size}", type=int, metavar="N",
                         help=f"the new channel's {size.replace('-', '_')}")
    fwd.set_defaults(func=cmd_forward)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a number of seconds > 0, not {text!r}")
    return value


def _argument(check: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from one of the coroutines' checks (ValueError -> exit 2)."""

    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _url(text: str) -> str:
    """A NATS URL as nats-py reads it (nats:// when no scheme is given), refused
    with a user or password in it: ps would show them."""
    url = text if "://" in text else f"nats://{text}"
    if "@" in urlsplit(url).netloc:
        raise argparse.ArgumentTypeError(
            "put credentials in NATS_USER/NATS_PASSWORD or NATS_TOKEN, not in the URL, "
            "where ps shows them")
    return url


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"an int >= 1, not {text!r}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="the channel's file")
    p.add_argument("--nats", action="append", metavar="URL", type=_url,
                   help="a NATS server (nats://host:4222 or tls://host:4222); repeat for "
                   "several (default: nats://127.0.0.1:4222)")
    p.add_argument("--subject", required=True, type=_argument(check_subject),
                   help="the NATS subject")
    p.add_argument("--inflight", type=_count, default=64, metavar="N",
                   help="requests in flight at most (default: %(default)s)")
    p.add_argument("--creds", metavar="FILE", help="a NATS credentials file")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificates to verify the server")
    p.add_argument("--tls-cert", metavar="FILE", help="this client's certificate")
    p.add_argument("--tls-key", metavar="FILE", help="this client's private key")
    p.add_argument("--name", help="the connection's name in NATS monitoring")
    p.add_argument("--stats", type=_seconds, metavar="SECONDS",
                   help="print a one-line rate to stderr every SECONDS")


def _connection(args: argparse.Namespace, role: str) -> Any:
    from reqrep.bridge import Connection

    return Connection(args.nats or ["nats://127.0.0.1:4222"], creds=args.creds,
                      tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                      name=args.name or f"reqrep bridge {role}")


class _ChannelError(Exception):
    """The channel at PATH cannot be opened (exit 66)."""


async def _serve(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event,
                 counters: Any) -> None:
    from reqrep.bridge import serve
    from reqrep.bridge._common import open_client

    try:
        client = await open_client(args.path, args.wait)
    except (OSError, ValueError) as e:
        raise _ChannelError(e) from None
    with client:
        await serve(client, args.subject, connection=_connection(args, "serve"),
                    queue=args.queue, inflight=args.inflight, timeout=args.timeout,
                    stop=stop, ready=ready, counters=counters)


async def _forward(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event,
                   counters: Any) -> None:
    from reqrep import IntServer, Server
    from reqrep.bridge import forward
    from reqrep.bridge._common import open_server

    sizes = (args.req_cap, args.resp_slots, args.resp_size, args.arena)
    try:
        if args.int:
            server: Any = IntServer(args.path, args.req_cap, args.resp_slots)
        elif args.codec or any(s is not None for s in sizes):
            server = Server(args.path, *sizes, codec=args.codec)
        else:
            server = open_server(args.path)
    except (OSError, ValueError) as e:
        raise _ChannelError(e) from None
    with server:
        await forward(server, args.subject, connection=_connection(args, "forward"),
                      inflight=args.inflight, timeout=args.timeout, stop=stop, ready=ready,
                      counters=counters)


def cmd_serve(args: argparse.Namespace) -> int:
    return _main(args, "serve", _serve)


def cmd_forward(args: argparse.Namespace) -> int:
    return _main(args, "forward", _forward)


def _main(args: argparse.Namespace, role: str, run: Any) -> int:
    from reqrep.bridge import BridgeError, Counters

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s reqrep %(message)s")
    log = logging.getLogger("reqrep.bridge")
    counters = Counters(f"bridge {role} {args.subject!r}")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(run(args, stop, ready, counters))
        forced = False

        def on_signal(signame: str) -> None:
            nonlocal forced
            if not ready.is_set():  # still starting: nothing was taken, stop at once
                log.info("%s: stopping", signame)
                task.cancel()
            elif stop.is_set():
                log.warning("%s again: stopping now", signame)
                forced = True
                task.cancel()
            else:
                log.info("%s: stopping (answering what is in flight)", signame)
                stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        reporter = asyncio.ensure_future(_report(counters, args.stats)) if args.stats else None
        announcer = asyncio.ensure_future(_announce(ready, counters.role))
        try:
            await task
        except _ChannelError as e:
            sys.stderr.write(f"reqrep bridge {role}: cannot open the channel: {e}\n")
            return EX_NOINPUT
        except BridgeError as e:
            sys.stderr.write(f"reqrep bridge {role}: {e}\n")
            return e.exit_code
        except asyncio.CancelledError:
            return 1 if forced else 0
        finally:
            announcer.cancel()
            if reporter is not None:
                reporter.cancel()
        log.info("%s: stopped", counters.line())
        return 0

    return asyncio.run(main())


async def _announce(ready: asyncio.Event, name: str) -> None:
    """Log once the bridge takes requests: a caller started before it may be told
    "no responders" (serve) or wait in the channel (forward)."""
    await ready.wait()
    logging.getLogger("reqrep.bridge").info("%s: taking requests", name)


async def _report(counters: Any, every: float) -> None:
    counters.line()  # start the first interval now
    while True:
        await asyncio.sleep(every)
        sys.stderr.write(counters.line() + "\n")
        sys.stderr.flush()

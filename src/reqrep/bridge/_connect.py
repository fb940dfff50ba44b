"""How a bridge connects to NATS: servers, credentials, TLS, logging, reconnects.

Secrets never come from a command line: a token or a user and password come from the
environment (``NATS_TOKEN``, or ``NATS_USER`` and ``NATS_PASSWORD``, as the nats CLI
reads them) or from the caller of the coroutine; a credentials file by its path.

When TLS is asked for (``tls://`` or any ``tls_*`` option), nothing goes over a
connection that is not encrypted: nats-py upgrades to TLS only when the server says
it must, so a token or a password is handed over only once the connection is seen to
be TLS, and a connection that turns out plain is closed before any request travels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

logger = logging.getLogger("reqrep.bridge")

DEFAULT_URL = "nats://127.0.0.1:4222"


class BridgeError(Exception):
    """A bridge cannot start or go on; the message says why. ``exit_code`` is what the
    command line exits with (sysexits.h)."""

    exit_code = 1


class NatsUnavailableError(BridgeError):
    """No NATS server could be reached."""

    exit_code = 69  # EX_UNAVAILABLE


class NatsAuthError(BridgeError):
    """The NATS server refused the credentials (or none were given and it needs some)."""

    exit_code = 77  # EX_NOPERM


class NatsConfigError(BridgeError):
    """The connection's settings are unusable: a missing or bad credentials or
    certificate file, TLS asked for but not offered, nats-py not installed."""

    exit_code = 78  # EX_CONFIG


@dataclass(frozen=True)
class Connection:
    """Where and how a bridge connects to NATS.

    ``servers``: one URL or several (``nats://host:4222``, ``tls://host:4222``).
    ``creds``: a NATS credentials file (JWT and seed). ``token``, ``user`` and
    ``password``: when None, read from ``NATS_TOKEN``, ``NATS_USER`` and
    ``NATS_PASSWORD``. ``tls_ca``: the CA file that the server's certificate must
    chain to; ``tls_cert`` and ``tls_key``: this client's certificate and key, for
    servers that verify clients. ``name`` labels the connection in NATS monitoring.
    """

    servers: str | Sequence[str] = DEFAULT_URL
    creds: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    name: str | None = None

    def __repr__(self) -> str:  # no secrets, in the URLs or beside them
        urls = [redact(u) for u in self.urls()]
        return (f"Connection({urls!r}, creds={self.creds!r}, tls_ca={self.tls_ca!r}, "
                f"tls_cert={self.tls_cert!r}, tls_key={self.tls_key!r}, name={self.name!r})")

    def urls(self) -> list[str]:
        servers = self.servers.split(",") if isinstance(self.servers, str) else self.servers
        return [u.strip() for u in servers if u.strip()]

    def wants_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key) or any(
            u.startswith("tls://") for u in self.urls())

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.wants_tls():
            return None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise NatsConfigError("a client certificate needs both tls_cert and tls_key")
        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert and self.tls_key:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise NatsConfigError(f"cannot load the TLS files: {e}") from None
        return ctx


def _env(value: str | None, name: str) -> str | None:
    return value if value is not None else os.environ.get(name) or None


def _is_tls(nc: NATS) -> bool:
    """Whether nc's connection is encrypted now. nats-py has no public way to ask: its
    TCP transport swaps its writer for a TLS one (a test fails if that changes)."""
    transport = getattr(nc, "_transport", None)
    writer = getattr(transport, "_io_writer", None)
    return writer is not None and writer.get_extra_info("ssl_object") is not None


class _NotEncrypted(ConnectionError):
    """TLS was asked for and the connection is plain: nothing is written. A
    ConnectionError, so that nats-py counts a failed attempt and tries again."""

    def __init__(self) -> None:
        super().__init__("TLS was asked for but the server did not offer it: nothing was "
                         "sent (no credentials, no requests)")


def _require_tls(nc: NATS) -> None:
    """Make nc refuse to write CONNECT (its credentials, then its subscriptions and
    messages) on any connection that is not encrypted, the first and every reconnect.
    nats-py builds CONNECT with ``_connect_command`` after any TLS upgrade and before
    writing anything; it has no public hook for this (a test fails if that changes)."""
    build = nc._connect_command

    def connect_command() -> bytes:
        if not _is_tls(nc):
            raise _NotEncrypted()
        return build()

    nc._connect_command = connect_command  # type: ignore[method-assign]


def redact(url: str) -> str:
    """`url` without the user or password it may hold."""
    scheme, sep, rest = url.rpartition("://")
    host = rest.rpartition("@")[2]
    return f"{scheme}{sep}{host}"


def _reason(err: BaseException | None) -> str:
    text = str(err) if err is not None else ""
    return text or (type(err).__name__ if err is not None else "no server answered")


# The server's errors that refuse a client's credentials (its -ERR lines, as nats-py
# words them). Only these: a slow consumer's error, say, names a subject, which may
# hold any word.
_REFUSALS = re.compile(r"nats: '(Authorization Violation|User Authentication (Expired|"
                       r"Revoked)|Authentication (Expired|Revoked))", re.IGNORECASE)


def refused(err: BaseException | None) -> bool:
    """Whether `err` is the server refusing the credentials."""
    if err is None or type(err).__name__ not in ("Error", "AuthorizationError"):
        return False
    return type(err).__name__ == "AuthorizationError" or bool(_REFUSALS.match(str(err)))


def failure(err: BaseException | None, urls: list[str]) -> BridgeError:
    """The BridgeError for why a connection could not be made or was closed."""
    text, where = _reason(err), ", ".join(redact(u) for u in urls)
    if isinstance(err, BridgeError):
        return err
    if isinstance(err, _NotEncrypted):
        return NatsConfigError(text)
    if refused(err):
        return NatsAuthError(f"NATS refused the credentials ({text}) at {where}")
    if isinstance(err, ssl.SSLError):
        return NatsConfigError(f"TLS failed: {text}")
    return NatsUnavailableError(f"cannot connect to NATS at {where}: {text}")


class Link:
    """A bridge's NATS connection: ``nc``, and ``lost``, set if NATS closes it for good
    (nats-py gives up after a server's error such as an authorization violation);
    ``why()`` is then the BridgeError to stop with."""

    def __init__(self, nc: NATS, urls: list[str], role: str) -> None:
        self.nc = nc
        self.urls = urls
        self.role = role
        self.lost = asyncio.Event()
        self.up = False  # connected once
        self.closing = False  # closed by us
        self.watchdog: asyncio.Future[None] | None = None
        self.fatal: BaseException | None = None  # a reconnect refused for good

    async def watch(self) -> None:
        """Reconnect when nats-py's reader has stopped on a connection that is still
        up. A message it cannot parse (a status line that is not UTF-8, from any peer
        that can publish to us) ends its read loop without a word; the connection
        would then look alive, and answer nothing, until its pings went stale.
        nats-py has no public way to see this: its read loop is ``_reading_task``."""
        nc = self.nc
        while True:
            await asyncio.sleep(READER_CHECK)
            reader = getattr(nc, "_reading_task", None)
            if nc.is_connected and reader is not None and reader.done():
                logger.warning("%s: NATS reader stopped (a message it could not parse); "
                               "reconnecting", self.role)
                await nc.force_reconnect()

    def why(self) -> BridgeError:
        """Why the connection is lost for good."""
        if self.fatal is not None:
            return failure(self.fatal, self.urls)
        err = failure(self.nc.last_error, self.urls)
        err.args = (f"NATS closed the connection: {err}",)
        return err

    async def close(self) -> None:
        self.closing = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        try:
            await self.nc.close()
        except Exception as e:  # noqa: BLE001 - e.g. mid-reconnect: it is closed anyway
            logger.debug("%s: closing the NATS connection: %s", self.role, e)


# A connection that stops answering (a peer that poisoned nats-py's reader stops it
# reading) is found stale after this many seconds times the pings: then reconnected.
PING_INTERVAL = 5
MAX_OUTSTANDING_PINGS = 2
READER_CHECK = 0.5  # seconds between looks at nats-py's reader


async def connect(conn: Connection, role: str) -> Link:
    """A connection that reconnects for ever once made, logging disconnects,
    reconnects and errors as `role` (the first connection fails fast, with a
    BridgeError saying why)."""
    try:
        from nats.aio.client import Client as NATSClient
    except ImportError:
        raise NatsConfigError(
            "the NATS bridge needs nats-py: pip install 'reqrep[nats]'") from None
    if conn.creds is not None and not os.path.isfile(conn.creds):
        raise NatsConfigError(f"no credentials file at {conn.creds!r}")
    ctx = conn.ssl_context()
    token = _env(conn.token, "NATS_TOKEN")
    user = _env(conn.user, "NATS_USER")
    password = _env(conn.password, "NATS_PASSWORD")
    if (user is None) != (password is None):
        raise NatsConfigError("a NATS user needs a password (NATS_USER and NATS_PASSWORD)")
    nc = NATSClient()
    if ctx is not None:
        _require_tls(nc)
    auth: dict[str, Any] = {}
    if token is not None:
        auth["token"] = token
    if user is not None and password is not None:
        auth["user"] = user
        auth["password"] = password
    if conn.creds is not None:
        auth["user_credentials"] = conn.creds
    errors: list[BaseException] = []  # while the first connection is made
    link = Link(nc, conn.urls(), role)

    async def disconnected() -> None:
        if not nc.is_closed:  # not a close (ours, or nats-py's giving up)
            logger.warning("%s: disconnected from NATS; reconnecting", role)

    async def closed() -> None:
        if link.up and not link.closing:
            logger.error("%s: NATS closed the connection: %s", role, _reason(nc.last_error))
            link.lost.set()

    async def reconnected() -> None:
        logger.warning("%s: reconnected to NATS at %s", role, _url(nc))

    async def error(e: Exception) -> None:
        if not link.up:  # the first connection: connect() says why it failed
            errors.append(e)
            return
        logger.warning("%s: NATS: %s", role, _reason(e))
        if refused(e) and link.fatal is None:
            # The credentials stopped being valid (revoked, rotated): trying them
            # again for ever helps nobody; stop, and say so.
            link.fatal = e
            link.lost.set()

    try:
        await nc.connect(
            conn.urls(), name=conn.name, tls=ctx, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=1, connect_timeout=5,
            ping_interval=PING_INTERVAL, max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            error_cb=error, disconnected_cb=disconnected, reconnected_cb=reconnected,
            closed_cb=closed, **auth)
    except Exception as e:  # noqa: BLE001 - sorted into a BridgeError below
        raise failure(errors[-1] if errors else e, conn.urls()) from None
    # Connected: from now on, reconnect for ever, reporting through the callbacks.
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 1
    link.up = True
    link.watchdog = asyncio.ensure_future(link.watch())
    logger.info("%s: connected to NATS at %s", role, _url(nc))
    return link


def _url(nc: NATS) -> str:
    """The server nc is connected to, without any user or password the URL held."""
    url = nc.connected_url
    return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else "?"

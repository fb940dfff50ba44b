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

import logging
import os
import ssl
from collections.abc import Callable, Sequence
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

    def urls(self) -> list[str]:
        return [self.servers] if isinstance(self.servers, str) else list(self.servers)

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


def _guarded(nc_box: list[NATS], secret: str) -> Callable[[], str]:
    """The secret, as nats-py asks for it when it writes CONNECT: only over TLS."""

    def give() -> str:
        if not nc_box or not _is_tls(nc_box[0]):
            raise NatsConfigError(
                "TLS was asked for but the server did not offer it: the credentials "
                "were not sent")
        return secret

    return give


def _reason(err: BaseException | None) -> str:
    text = str(err) if err is not None else ""
    return text or (type(err).__name__ if err is not None else "no server answered")


async def connect(conn: Connection, role: str) -> NATS:
    """A connected nats-py client that reconnects for ever once connected, logging
    disconnects, reconnects and errors as `role` (the first connection fails fast,
    with a BridgeError saying why)."""
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
    box: list[NATS] = [nc]
    auth: dict[str, Any] = {}
    if token is not None:
        auth["token"] = _guarded(box, token) if ctx else token
    if user is not None and password is not None:
        auth["user"] = user
        auth["password"] = _guarded(box, password) if ctx else password
    if conn.creds is not None:
        auth["user_credentials"] = conn.creds
    errors: list[BaseException] = []  # while the first connection is made

    async def disconnected() -> None:
        if not nc.is_closed:  # not our own close()
            logger.warning("%s: disconnected from NATS; reconnecting", role)

    async def reconnected() -> None:
        logger.warning("%s: reconnected to NATS at %s", role, _url(nc))

    async def error(e: Exception) -> None:
        if nc.is_connected or nc.is_reconnecting:
            logger.warning("%s: NATS: %s", role, _reason(e))
        else:
            errors.append(e)

    try:
        await nc.connect(
            conn.urls(), name=conn.name, tls=ctx, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=1, connect_timeout=5,
            error_cb=error, disconnected_cb=disconnected, reconnected_cb=reconnected, **auth)
    except NatsConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - sorted into a BridgeError below
        last = errors[-1] if errors else e
        text = _reason(last)
        if isinstance(last, NatsConfigError):
            raise last from None
        if "authorization" in text.lower() or "authentication" in text.lower():
            raise NatsAuthError(f"NATS refused the credentials ({text}) at "
                                f"{', '.join(conn.urls())}") from None
        if isinstance(last, ssl.SSLError):
            raise NatsConfigError(f"TLS failed: {text}") from None
        raise NatsUnavailableError(f"cannot connect to NATS at {', '.join(conn.urls())}: "
                                   f"{text}") from None
    if ctx is not None and not _is_tls(nc):
        await nc.close()
        raise NatsConfigError("TLS was asked for but the server did not offer it: "
                              "the connection was closed before anything was sent")
    # Connected: from now on, reconnect for ever, reporting through the callbacks.
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 1
    logger.info("%s: connected to NATS at %s", role, _url(nc))
    return nc


def _url(nc: NATS) -> str:
    """The server nc is connected to, without any user or password the URL held."""
    url = nc.connected_url
    return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else "?"

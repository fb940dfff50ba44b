"""Shared-memory request/response IPC for Linux processes.

Many client processes send requests, many worker processes take them, and every
response is routed back to the process (and the call) that asked, all through
one shared-memory channel: no broker process, no socket pair per connection.

Two variants share the same design:

* :class:`Server` / :class:`Client` carry ``bytes`` or ``str`` payloads
  (the type is preserved end to end; any other buffer arrives as ``bytes``).
* :class:`IntServer` / :class:`IntClient` carry one signed 64-bit ``int`` per
  request and per response, with a lock-free request queue.

A minimal worker and client::

    import reqrep

    with reqrep.Server("/tmp/rr.chan") as server:      # worker process
        while (msg := server.recv_wait()) is not None:
            data, rid = msg
            server.reply(rid, data.upper())

    with reqrep.Client("/tmp/rr.chan") as client:      # any other process
        print(client.req("hello", timeout=5.0))        # -> 'HELLO'

:class:`ChannelFormatError` (a :class:`ValueError`) is raised for a file that is
not a valid channel; :class:`WorkerDiedError` (a :class:`RuntimeError`) when the
worker that took a request died before replying; :class:`RemoteError` when the
handler failed (``server.reply_error``, or a handler of ``serve`` that raised).
Linux only, 64-bit, CPython 3.10+.
"""

from reqrep._codecs import Codec, register_codec
from reqrep._remote import RemoteError
from reqrep._reqrep import (
    ChannelFormatError,
    Client,
    IntClient,
    IntServer,
    ReplyBuffer,
    Server,
    View,
    WorkerDiedError,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelFormatError",
    "Codec",
    "Client",
    "IntClient",
    "IntServer",
    "RemoteError",
    "ReplyBuffer",
    "Server",
    "View",
    "WorkerDiedError",
    "__version__",
    "register_codec",
]

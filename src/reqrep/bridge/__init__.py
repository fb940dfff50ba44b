"""Extend a channel over NATS (SPEC §8): ``pip install 'reqrep[nats]'``.

* :func:`serve` answers NATS requests on a subject (a queue group, so several bridges
  share the load) with the workers of a local channel: local workers serve remote
  callers.
* :func:`forward` is a worker of a local channel that hands each request to NATS and
  replies with the answer: local clients use remote workers.

Neither the clients nor the workers change: a forward bridge on one host and a serve
bridge on another make one channel of two. Both run in the event loop (on
``reqrep.aio``) with many requests in flight. The wire format, for callers and
workers written with any NATS library, is in ``docs/bridge.md``; the command line is
``python -m reqrep bridge serve|forward``.

Example (two hosts, one NATS cluster)::

    # host B, where the workers are
    await reqrep.bridge.serve("/dev/shm/svc.rr", "svc",
                              connection=Connection("nats://nats-b:4222"))
    # host A, where the clients are
    await reqrep.bridge.forward("/dev/shm/svc.rr", "svc",
                                connection=Connection("nats://nats-a:4222"))
"""

from reqrep.bridge._common import Counters
from reqrep.bridge._connect import (
    BridgeError,
    Connection,
    NatsAuthError,
    NatsConfigError,
    NatsUnavailableError,
)
from reqrep.bridge._forward import forward
from reqrep.bridge._serve import serve
from reqrep.bridge._wire import WireError

__all__ = [
    "BridgeError",
    "Connection",
    "Counters",
    "NatsAuthError",
    "NatsConfigError",
    "NatsUnavailableError",
    "WireError",
    "forward",
    "serve",
]

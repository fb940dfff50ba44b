"""The zero-copy echo (SPEC section 9): the worker takes each request as a View in
the arena and writes its reply in place, the client reads the reply where it lies.

Per round trip the payload is copied twice: into the arena by the client's send,
and from there into the reply's slot by the worker. The copying echo
(``ReqrepStr``) copies it four times and allocates two ``bytes`` objects.
"""

from __future__ import annotations

from typing import Any

from reqrep.bench.transports import Op, ReqrepStr


class ReqrepZeroCopy(ReqrepStr):
    """``recv_wait(copy=False)`` + ``reply_buffer`` in the worker, ``req(copy=False)``
    in the client."""

    def serve(self, worker: int) -> None:
        srv = self._server()
        recv_wait, reply_buffer = srv.recv_wait, srv.reply_buffer
        while True:
            taken = recv_wait(copy=False)
            if taken is None:
                continue
            request, rid = taken
            reply = reply_buffer(rid, len(request))
            if reply is None:  # cancelled meanwhile: nobody waits for it
                request.release()
                continue
            with request, reply, memoryview(reply) as out:
                out[:] = request

    def connect(self, client: int) -> Op:
        c = self._server().client()
        req = c.req

        def op(msg: Any) -> Any:
            view = req(msg, copy=False)
            if view is None:
                raise RuntimeError("no reply")
            # A memoryview compares by content for the workload's check; the View
            # (and its slot) goes with it when the caller drops it.
            return memoryview(view)

        return op

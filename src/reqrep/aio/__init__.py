"""asyncio support for reqrep: an event-loop client and an event-loop worker.

* :class:`AsyncClient` wraps a :class:`~reqrep.Client` or :class:`~reqrep.IntClient`:
  ``await ac.req(data, timeout=None)`` with any number of requests in flight on
  one client. Between replies the event loop sleeps on an eventfd
  (``loop.add_reader``): there is no polling and no thread per request. One
  helper thread per ``AsyncClient`` sleeps (without the GIL) on the client's
  shared-memory *bell*, which every reply to this client rings, and turns it
  into an eventfd signal, so replies from workers in unrelated processes that
  know nothing about eventfds wake the loop too.
* :func:`serve` runs a worker loop in the event loop: it takes requests from the
  channel and answers them with a plain or an ``async`` handler, with at most
  ``concurrency`` async handlers in flight. Requests from plain synchronous
  clients are seen through one helper thread that sleeps until a request is
  queued.

Both work with the default asyncio loop and with uvloop. The machinery they share, a
helper thread that sleeps in the channel and wakes the loop through an eventfd, is
``_waker.py``; ``_client.py`` and ``_serve.py`` are its two users.

Example::

    import asyncio, reqrep
    from reqrep.aio import AsyncClient, serve

    async def main() -> None:
        with reqrep.Server(None) as server, server.client() as client:
            worker = asyncio.create_task(serve(server, lambda data: data.upper()))
            async with AsyncClient(client) as ac:
                print(await asyncio.gather(*(ac.req(f"hi {i}", timeout=5) for i in range(9))))
            worker.cancel()  # a clean stop: handlers in flight finish first
            await asyncio.gather(worker, return_exceptions=True)

    asyncio.run(main())
"""


from reqrep.aio._client import AsyncClient
from reqrep.aio._serve import serve

__all__ = ["AsyncClient", "serve"]

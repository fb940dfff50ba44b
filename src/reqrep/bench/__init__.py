"""The side-by-side benchmark suite of reqrep (``python -m reqrep bench``).

Modules:

* ``transports`` - the transport interface and the reqrep transports;
* ``peers`` - the same echo over pipes, sockets, ``multiprocessing``, TCP and the
  optional packages of the ``[bench]`` extra (pyzmq, sysv_ipc, faster-fifo);
* ``rows`` - the catalogue of rows (groups, process layouts, workloads);
* ``workloads`` - the client loops (warm-up, start gate, timed part);
* ``procs`` - forked, bounded child processes;
* ``bridge`` - the NATS bridge rows (a nats-server per run) against plain nats-py;
* ``iceoryx`` - iceoryx2 request-response (busy-polling and event modes), when installed;
* ``runner`` - runs each row several times in fresh processes, takes medians;
* ``table`` - ratios to the fastest peer, the printed table, the JSON document;
* ``core`` - the optional C micro-benchmark (``--core``);
* ``suite`` - all of it as one call, used by the command line.
"""

from reqrep.bench.suite import list_rows, run_suite

__all__ = ["list_rows", "run_suite"]

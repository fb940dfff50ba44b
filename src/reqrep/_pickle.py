"""How channel objects travel to other processes (pickle, multiprocessing).

A file-backed channel re-opens by path; a memfd channel travels as a file
descriptor through multiprocessing's own fd passing; an anonymous channel
cannot be pickled: it only travels by ``fork()``.
"""

from __future__ import annotations

import os
import pickle
import re
from multiprocessing import reduction
from typing import Any

# /proc/self/... names another file in the process that loads the pickle
_PROC_SELF = re.compile(r"^/proc/(?:self|thread-self)(?=/)")


def reduce_channel(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    cls = type(obj)
    if obj.path is not None:
        return cls._open_existing, (_PROC_SELF.sub(f"/proc/{os.getpid()}", obj.path),)
    if obj.memfd >= 0:
        return _from_dupfd, (cls, reduction.DupFd(obj.memfd))
    raise pickle.PicklingError(
        f"an anonymous {cls.__name__} (path None) cannot be pickled: it only travels by "
        "fork() (use the 'fork' start method and pass it to Process(), or create the "
        "channel with a path or with new_memfd())"
    )


def _from_dupfd(cls: Any, dupfd: Any) -> Any:
    fd = dupfd.detach()
    try:
        return cls.from_fd(fd)
    finally:
        os.close(fd)

"""Functions the process-pool tests run in workers: module level, so that they pickle by
reference and import in spawned and forkserver workers too."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

_initialized: list[Any] = []


def square(x: int) -> int:
    return x * x


def add(x: int, y: int = 0, *, z: int = 0) -> int:
    return x + y + z


def pid() -> int:
    return os.getpid()


def echo(x: Any) -> Any:
    return x


def nbytes(data: bytes) -> int:
    return len(data)


def make_bytes(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + b"x" * (n % 256)


def fail(message: str) -> None:
    raise ValueError(message)


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("this exception does not pickle")


def fail_unpicklable() -> None:
    raise Unpicklable("nope")


def unpicklable_result() -> Any:
    return lambda: 0


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def touch_after(path: str, seconds: float) -> str:
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    return path


def wait_for_file(path: str, limit: float = 30.0) -> int:
    """Block until ``path`` exists (the test's signal to go on); this worker's pid."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return os.getpid()


def exit_now(code: int = 7) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def announce_then_block(path: str) -> None:
    """Write this worker's pid to ``path``, then block (the test kills it)."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(60)


def init(value: Any) -> None:
    _initialized.append(value)


def initialized() -> list[Any]:
    return list(_initialized)


def init_fail() -> None:
    raise RuntimeError("initializer failed")


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _slow_make(seconds: float, value: Any) -> Any:
    time.sleep(seconds)  # runs where the result is unpickled: in the pool's process
    return value


class SlowToUnpickle:
    def __init__(self, seconds: float, value: Any) -> None:
        self.seconds, self.value = seconds, value

    def __reduce__(self) -> Any:
        return (_slow_make, (self.seconds, self.value))


def slow_to_unpickle(seconds: float, value: Any) -> Any:
    return SlowToUnpickle(seconds, value)


def call(fn: Any) -> Any:
    return fn()

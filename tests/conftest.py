"""Fixtures and the global watchdog for the reqrep tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import KINDS, AnyServer, Closer, make_server
from natsproc import Procs, need_nats

# Every test gets a watchdog. The "thread" method works even when the code under test
# blocks signals or retries EINTR forever: it dumps the stacks and ends the run instead of
# letting it hang. Tests that need another bound set their own marker.
DEFAULT_TIMEOUT = 120


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds, method=None): per-test watchdog")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT, method="thread"))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """The NATS bridge tests' processes (natsproc.py), all killed at the test's end;
    the test is skipped without nats-server or nats-py."""
    need_nats()
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def chan_path(tmp_path: Path) -> Path:
    """A path for a channel file that does not exist yet."""
    return tmp_path / "chan.rr"


@pytest.fixture
def closer() -> Iterator[Closer]:
    c = Closer()
    yield c
    c.close_all()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def str_server(kind: str, tmp_path: Path, closer: Closer) -> AnyServer:
    """A small Str channel of every backing kind."""
    return closer(make_server("str", kind, tmp_path / "chan.rr", req_cap=16, resp_slots=8,
                                resp_size=256))


@pytest.fixture
def int_server(kind: str, tmp_path: Path, closer: Closer) -> AnyServer:
    """A small Int channel of every backing kind."""
    return closer(make_server("int", kind, tmp_path / "chan.rr", req_cap=16, resp_slots=8))

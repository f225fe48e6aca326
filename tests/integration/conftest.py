"""Real localnets for integration tests: real processes, real TCP on 127.0.0.1, real LMDB.

One localnet per runtime per module (starting Ray nodes costs seconds), torn down
with `localnet.down`, which must leave no process behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from node import localnet, procs
from node.client import Client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A localnet that fails to start says why per node (exit code, silence) and shows
    each node's log tail: NodesNotReady keeps them in `details`, not in its message."""
    outcome = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, localnet.NodesNotReady):
        outcome.get_result().sections.append(("localnet nodes", call.excinfo.value.details))


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def heights(net: localnet.Localnet) -> list[int | None]:
    return [row["height"] for row in localnet.status(net)]


@pytest.fixture(scope="module", params=["inprocess", "ray"])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[localnet.Localnet]:
    directory = tmp_path_factory.mktemp(f"localnet-{request.param}")
    n = localnet.up(directory, 4, app="kvstore", runtime=request.param, timeout=90)
    try:
        yield n
    finally:
        down_leaving_nothing(n)


def down_leaving_nothing(net: localnet.Localnet) -> None:
    """`localnet.down`, then assert that no process the nodes had is still alive."""
    trees = [localnet.node_tree(node) for node in net.nodes]
    localnet.down(net)
    leftover = [pid for tree in trees for pid, start in tree.items()
                if procs.same_process(pid, start)]
    assert not leftover, f"localnet down left processes behind: {leftover}"


@pytest.fixture
def client(net: localnet.Localnet) -> Client:
    return Client([node.rpc for node in net.nodes])

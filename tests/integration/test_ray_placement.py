"""Placement across machines, tested on one machine with Ray's multi-node test
cluster (several raylets on one host): a node's verifier pool and mempool are
pinned to another raylet through custom resources, and the node still commits.
And where the consensus engine, the mempool and the executor run: in the supervisor's
process or in Ray actors of their own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from node import localnet
from node.config import NodeConfig, load_config, write_config
from node.genesis import Genesis, load_genesis
from node.runtime import GC_THRESHOLDS
from node.supervisor import Node
from node.wallet import Wallet

pytestmark = pytest.mark.integration


def one_validator(tmp_path: Path, edit: Callable[[NodeConfig], None]
                  ) -> tuple[NodeConfig, Genesis]:
    """A one-validator Ray home whose config `edit` changed, read back from disk."""
    home = localnet.generate(tmp_path / "net", 1, runtime="ray").nodes[0].home
    cfg = load_config(home)
    edit(cfg)
    write_config(home, cfg)
    cfg = load_config(home)
    return cfg, load_genesis(cfg.genesis_path)


async def commit_one_tx(node: Node, chain_id: str) -> dict:
    """Submit one signed kvstore tx to `node` and wait for it to commit with code 0."""
    w = Wallet.generate()
    h, error, status = await node.submit_tx(w.kv_set(chain_id, b"k", b"v"))
    assert error is None and status == 202, error
    result = await node.wait_committed(h, 30)
    assert result is not None and result["code"] == 0
    return result


def test_verifier_and_mempool_on_another_raylet(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1, resources={"bftnode_workers": 4})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)

        def pin(cfg: NodeConfig) -> None:
            cfg.ray.address = cluster.address
            cfg.ray.verifier_actors = 1   # the node default (the localnet preset has none)
            cfg.ray.verifier_resources = {"bftnode_workers": 1}
            cfg.ray.mempool_in_supervisor = False   # a Ray actor, to be placed
            cfg.ray.mempool_resources = {"bftnode_workers": 1}

        cfg, genesis = one_validator(tmp_path, pin)

        async def run() -> None:
            node = Node(cfg, genesis)
            await node.start()
            try:
                where_verifier = await node.verifier_workers[0].call("where")
                where_mempool = await node.mempool.call("where")
                assert where_verifier["ray_node_id"] == worker.node_id
                assert where_mempool["ray_node_id"] == worker.node_id
                head_id = ray.get_runtime_context().get_node_id()
                assert head_id != worker.node_id
                await commit_one_tx(node, genesis.chain_id)
                # The mempool had the pool's worker, on the other raylet, check the signature.
                verified, _busy = await node.verifier_workers[0].call("stats")
                assert verified >= 1
            finally:
                await node.stop()

        asyncio.run(run())
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.parametrize("consensus_here,mempool_here,executor_here",
                         [(True, True, True), (True, False, False), (False, True, False),
                          (False, False, True)])
def test_supervisor_hosted_actors(tmp_path: Path, consensus_here: bool,
                                  mempool_here: bool, executor_here: bool) -> None:
    """`[ray] consensus_in_supervisor`, `mempool_in_supervisor` and
    `executor_in_supervisor` host the engine, the mempool and the executor in the
    supervisor's process (the defaults) or in Ray actors of their own; the node commits
    either way, and a hosted mempool still verifies through the verifier actors."""
    pytest.importorskip("ray")

    def place(cfg: NodeConfig) -> None:
        assert cfg.ray.consensus_in_supervisor, "the default hosts consensus in the supervisor"
        assert cfg.ray.mempool_in_supervisor, "the default hosts the mempool in the supervisor"
        assert cfg.ray.executor_in_supervisor, "the default hosts the executor in the supervisor"
        cfg.ray.verifier_actors = 1   # the node default (the localnet preset has none)
        cfg.ray.consensus_in_supervisor = consensus_here
        cfg.ray.mempool_in_supervisor = mempool_here
        cfg.ray.executor_in_supervisor = executor_here

    cfg, genesis = one_validator(tmp_path, place)

    async def run() -> None:
        node = Node(cfg, genesis)
        await node.start()
        try:
            here = os.getpid()
            consensus_where = await node.consensus.call("where")
            mempool_where = await node.mempool.call("where")
            assert (consensus_where["pid"] == here) is consensus_here, consensus_where
            assert (mempool_where["pid"] == here) is mempool_here, mempool_where
            executor_where = await node.executor.call("where")
            assert (executor_where["pid"] == here) is executor_here, executor_where
            # The verifiers stay Ray actors in their own processes, with the collector
            # thresholds every node process sets (node.runtime.tune_gc).
            for ref in node.verifier_workers:
                where = await ref.call("where")
                assert where["pid"] != here, (ref.name, where)
                assert where["gc_threshold"] == list(GC_THRESHOLDS)
            assert consensus_where["gc_threshold"] == list(GC_THRESHOLDS)
            assert mempool_where["gc_threshold"] == list(GC_THRESHOLDS)
            assert executor_where["gc_threshold"] == list(GC_THRESHOLDS)
            result = await commit_one_tx(node, genesis.chain_id)
            assert (await node.status())["height"] >= result["height"]
            # The tx's signature was checked by the verifier actor, wherever the mempool is.
            verified, _busy = await node.verifier_workers[0].call("stats")
            assert verified >= 1
        finally:
            await node.stop()

    asyncio.run(run())

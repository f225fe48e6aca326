"""Prometheus metrics of one node (its own registry, so tests can run many nodes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FINALITY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 10.0, 30.0)


def catch_up(counter: Counter, total: float) -> None:
    """Raise `counter` to a running total kept elsewhere (an actor, the peer network),
    read when /metrics is scraped; a counter never goes down."""
    counter.inc(max(0, total - counter._value.get()))


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._call_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self.height = Gauge("bftnode_height", "Last committed height", registry=r)
        self.round = Gauge("bftnode_round", "Consensus round at the current height", registry=r)
        self.block_interval = Histogram(
            "bftnode_block_interval_seconds", "Time between consecutive commits", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.block_txs = Histogram("bftnode_block_txs", "Transactions per committed block",
                                   registry=r, buckets=(0, 1, 10, 100, 1000, 5000, 20000, 100000))
        self.txs_committed = Counter("bftnode_txs_committed", "Transactions committed", registry=r)
        self.txs_rejected = Counter("bftnode_txs_rejected", "Transactions refused, by reason",
                                    ["reason"], registry=r)
        self.txs_admitted = Counter("bftnode_txs_admitted", "Transactions admitted to the mempool",
                                    registry=r)
        self.mempool_txs = Gauge("bftnode_mempool_txs", "Transactions waiting in the mempool",
                                 registry=r)
        self.verify_queue = Gauge(
            "bftnode_verify_queue_batches", "Peers' batches queued for verification",
            registry=r)
        self.verify_wait = Gauge(
            "bftnode_verify_wait_seconds", "How long the oldest queued peer batch has waited "
            "for verification (0 when none waits); past [mempool] max_verify_wait_ms clients' "
            "txs are refused, node busy", registry=r)
        self.peers = Gauge("bftnode_peers", "Connected peers", registry=r)
        self.p2p_rejected = Counter("bftnode_p2p_rejected", "Peer link events refused, by reason",
                                    ["reason"], registry=r)
        self.messages_rejected = Counter(
            "bftnode_messages_rejected", "Peer messages dropped, by reason", ["reason"], registry=r)
        self.signatures_verified = Counter("bftnode_signatures_verified",
                                           "Signatures verified by the verifier pool", registry=r)
        self.verify_rate = Gauge("bftnode_verify_rate", "Signatures verified per second of "
                                 "verifier time", registry=r)
        self.finality = Histogram(
            "bftnode_finality_seconds", "Submit (admission at this node) to commit",
            registry=r, buckets=FINALITY_BUCKETS)
        self.evidence = Counter("bftnode_evidence", "Duplicate-vote evidence detected",
                                registry=r)
        self.evidence_committed = Counter("bftnode_evidence_committed",
                                          "Duplicate-vote evidence included in committed blocks",
                                          registry=r)
        self.http_rejected = Counter("bftnode_http_rejected", "HTTP requests refused, by reason",
                                     ["reason"], registry=r)
        self.consensus_dropped = Counter(
            "bftnode_consensus_dropped",
            "Consensus inputs dropped: kind=rejected (invalid) or ignored (stale, ahead, "
            "duplicate), by reason", ["kind", "reason"], registry=r)
        self.prepared_blocks = Counter(
            "bftnode_prepared_blocks",
            "Blocks the executor applied ahead of their decision (optimistic execution)",
            registry=r)
        self.sync_blocks = Counter("bftnode_sync_blocks", "Blocks obtained by block sync",
                                   registry=r)
        self.batch_requests = Counter(
            "bftnode_batch_requests", "Requests to peers for batches a proposal names and "
            "this node lacks, sent after the batches already queued were verified",
            registry=r)
        self.actor_calls = Counter(
            "bftnode_actor_calls", "Calls from the supervisor to the node's actors, by actor "
            "and method", ["actor", "method"], registry=r)
        self.actor_call_seconds = Counter(
            "bftnode_actor_call_seconds", "Wall time the supervisor waited on actor calls "
            "(queueing included), by actor and method", ["actor", "method"], registry=r)

    def observe_call(self, actor: str, method: str, seconds: float) -> None:
        key = (actor, method)
        children = self._call_children.get(key)
        if children is None:
            children = self._call_children[key] = (
                self.actor_calls.labels(actor, method),
                self.actor_call_seconds.labels(actor, method))
        children[0].inc()
        children[1].inc(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

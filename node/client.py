"""Client library: build and sign transactions, submit them, wait for finality,
and verify commit certificates and finality receipts against a validator set.

    from node.client import Client, Wallet
    w = Wallet.generate()
    c = Client(["http://127.0.0.1:PORT"])
    chain = c.status()["chain_id"]
    h = c.submit(w.kv_set(chain, b"key", b"value"))
    r = c.wait_committed(h, timeout=30)      # {"hash","height","index","code"}

Synchronous and dependency-free (urllib), so it can be used from any program.
Requests go to the first URL that answers; a node that does not answer is
skipped in favour of the next.

A node that answers "not now" (503: node busy, mempool full, too many open
connections) did not take the request: the client tries the next URL, and when
every node said so, sends the same bytes again after a pause (50 ms, doubling up
to 1 s) until `busy_timeout` seconds have passed since the first try; then it
raises ClientError with status 503. Sending a refused tx again is safe: a refused
tx was not admitted anywhere, and a tx admitted twice is answered "duplicate".
`busy_timeout=0` raises at the first round of refusals. A Wallet counts a nonce
for each tx it signs: after a refusal, send that tx again later, or step the
wallet back (``w.nonce -= 1``) before signing another, or the sender's later txs
fail with a nonce gap.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from consensus.errors import InvalidMessage
from consensus.types import BlockHeader, CommitCertificate
from consensus.validators import Validator, ValidatorSet
from crypto.hashing import merkle_root, verify_merkle_proof
from node.wallet import Wallet, tx_hash

__all__ = [
    "Client",
    "ClientError",
    "Wallet",
    "header_from_json",
    "tx_hash",
    "validator_set_from_json",
    "verify_block",
    "verify_receipt",
]


class ClientError(Exception):
    """A request was refused (4xx/5xx with a reason) or no node could be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# A 503 whose reason starts with one of these is a refusal for now: the node took
# nothing, and the same request may succeed later or at another node. Others (a halted
# node) are final. The server sends Retry-After with exactly these (node/rpc.py).
REFUSED_FOR_NOW = ("node busy", "mempool full", "too many open connections")
_RETRY_FIRST_S, _RETRY_MAX_S = 0.05, 1.0


class _NotNow(Exception):
    """Every node answered the request with a refusal for now (`REFUSED_FOR_NOW`)."""


class Client:
    def __init__(self, urls: Sequence[str] | str, timeout: float = 10.0,
                 busy_timeout: float = 30.0) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u]
        if not urls:
            raise ValueError("Client needs at least one node URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.busy_timeout = busy_timeout

    def _request(self, method: str, path: str, body: bytes | None = None,
                 timeout: float | None = None, ok: tuple[int, ...] = (200, 202)) -> Any:
        """One request, to the first node that takes it; see the module docstring for
        what happens when the nodes answer "not now"."""
        deadline = time.monotonic() + self.busy_timeout
        pause = _RETRY_FIRST_S
        while True:
            try:
                return self._request_once(method, path, body, timeout, ok)
            except _NotNow as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientError(f"{exc} (for {self.busy_timeout:g} s)", 503) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, _RETRY_MAX_S)

    def _request_once(self, method: str, path: str, body: bytes | None,
                      timeout: float | None, ok: tuple[int, ...]) -> Any:
        last: Exception | None = None
        busy: str | None = None
        for url in self.urls:
            req = urllib.request.Request(url + path, data=body, method=method)
            if body is not None:
                req.add_header("Content-Type", "application/octet-stream")
            try:
                with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                try:
                    detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
                except ValueError:
                    detail = exc.reason
                if exc.code in ok:
                    return None
                if exc.code == 404 and method == "GET":
                    return None
                if exc.code == 503 and str(detail).startswith(REFUSED_FOR_NOW):
                    busy = f"{method} {path} -> 503: {detail}"
                    continue
                raise ClientError(f"{method} {path} -> {exc.code}: {detail}", exc.code) from None
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last = exc
                continue
        if busy is not None:
            raise _NotNow(busy)
        raise ClientError(f"no node answered {method} {path}: {last}")

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/v1/status")

    def submit(self, tx: bytes) -> str:
        """Submit one encoded signed tx; returns its hash (hex). Raises ClientError if refused."""
        return self._request("POST", "/v1/txs", tx)["hash"]

    def submit_and_wait(self, tx: bytes, timeout: float = 30.0) -> dict[str, Any]:
        return self._request("POST", f"/v1/txs?wait=commit&timeout={timeout}", tx,
                             timeout=timeout + 5)

    def tx(self, tx_hash_hex: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/txs/{tx_hash_hex}")

    def wait_committed(self, tx_hash_hex: str, timeout: float = 30.0,
                       poll: float = 0.05) -> dict[str, Any]:
        """Block until the tx is committed; {"hash","height","index","code"}."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.tx(tx_hash_hex)
            if r is not None and r.get("status") == "committed":
                return {k: r[k] for k in ("hash", "height", "index", "code")}
            if time.monotonic() >= deadline:
                raise ClientError(f"transaction {tx_hash_hex} not committed within {timeout} s")
            time.sleep(poll)
            poll = min(poll * 1.5, 0.5)

    def block(self, height: int | str = "latest") -> dict[str, Any] | None:
        return self._request("GET", f"/v1/blocks/{height}")

    def receipt(self, tx_hash_hex: str) -> dict[str, Any] | None:
        return self._request("GET", f"/v1/receipts/{tx_hash_hex}")


def header_from_json(h: dict[str, Any]) -> BlockHeader:
    return BlockHeader(
        chain_id=h["chain_id"], height=int(h["height"]), time_ms=int(h["time_ms"]),
        prev_block_hash=bytes.fromhex(h["prev_block_hash"]),
        payload_digest=bytes.fromhex(h["payload_digest"]),
        app_hash=bytes.fromhex(h["app_hash"]),
        validators_hash=bytes.fromhex(h["validators_hash"]),
        proposer=bytes.fromhex(h["proposer"]))


def certificate_from_json(c: dict[str, Any]) -> CommitCertificate:
    return CommitCertificate(
        height=int(c["height"]), round=int(c["round"]), block_hash=bytes.fromhex(c["block_hash"]),
        signatures=tuple((bytes.fromhex(s["validator"]), bytes.fromhex(s["signature"]))
                         for s in c["signatures"]))


def validator_set_from_json(validators: Sequence[dict[str, Any]]) -> ValidatorSet:
    return ValidatorSet(tuple(Validator(bytes.fromhex(v["public_key"]), int(v["power"]))
                              for v in validators))


def verify_block(block: dict[str, Any], validators: ValidatorSet, chain_id: str) -> None:
    """Check that `block` (the JSON of GET /v1/blocks/H) is final on `chain_id`.

    Recomputes the header hash, checks the certificate is for that hash and
    height, and checks the certificate's signatures and quorum. Raises
    InvalidMessage naming what is wrong.
    """
    header = header_from_json(block["header"])
    if header.chain_id != chain_id:
        raise InvalidMessage(f"block is from chain {header.chain_id!r}, not {chain_id!r}")
    cert = certificate_from_json(block["commit"])
    if cert.block_hash != header.hash():
        raise InvalidMessage(f"certificate for height {cert.height} is for another block")
    if cert.height != header.height:
        raise InvalidMessage(f"certificate height {cert.height} != block height {header.height}")
    if "payload" in block and merkle_root([bytes.fromhex(d) for d in block["payload"]]) \
            != header.payload_digest:
        raise InvalidMessage(f"block {header.height}: payload does not match its digest")
    cert.verify(chain_id, validators)


def verify_receipt(receipt: dict[str, Any], validators: ValidatorSet | None = None,
                   chain_id: str | None = None) -> dict[str, Any]:
    """Verify a finality receipt offline; returns {"tx_hash","height","code"}.

    The chain of evidence: tx hash --Merkle path--> batch digest, which is
    item `batch_index` of the block payload --Merkle root--> the header's
    payload digest --sha256--> block hash, which 2f+1 validators precommitted
    (the certificate). Pass the `validators` and `chain_id` you trust; the
    ones inside the receipt are used only if you pass none.
    """
    chain_id = chain_id or receipt["chain_id"]
    if validators is None:
        validators = validator_set_from_json(receipt["validators"])
    tx = bytes.fromhex(receipt["tx_hash"])
    payload = [bytes.fromhex(d) for d in receipt["payload"]]
    i = int(receipt["batch_index"])
    if not 0 <= i < len(payload):
        raise InvalidMessage("receipt batch index is outside the block payload")
    proof = [(bool(left), bytes.fromhex(h)) for left, h in receipt["batch_proof"]]
    if not verify_merkle_proof(tx, proof, payload[i]):
        raise InvalidMessage("receipt: the transaction is not in the named batch")
    verify_block({"header": receipt["header"], "commit": receipt["commit"],
                  "payload": receipt["payload"]}, validators, chain_id)
    return {"tx_hash": receipt["tx_hash"], "height": receipt["header"]["height"],
            "code": receipt["code"]}



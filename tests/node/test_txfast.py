"""The compiled decoder of the usual tx (node/_txfast.pyx) against the Python decoder.

Every validator decodes every tx; a node with the compiled fast path and one without
must accept exactly the same bytes as exactly the same Tx, or their app hashes could
split. `_txfast.decode` may only ever answer None (the Python decoder then decides) or
the very Tx the Python decoder gives, field types included.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.codec import CodecError, pack
from node import _txfast  # built by scripts/setup.sh (pip install), like crypto._verify
from node.tx import (
    MAX_AMOUNT,
    MAX_NONCE,
    PROTOCOL_MAX_TX_BYTES,
    TX_TAG,
    Tx,
    _decode_tx_python,
    decode_tx,
    tx_decoder_backend,
)

SENDER = bytes(range(32))
SIGNATURE = bytes(range(64, 128))


def python_decode(data: bytes) -> Tx | None:
    try:
        return _decode_tx_python(data, PROTOCOL_MAX_TX_BYTES)
    except CodecError:
        return None


def fields(tx: Tx) -> list:
    """A tx's fields with their types: equal Txs could still differ in type (True == 1)."""
    values = [tx.chain_id, tx.app, tx.sender, tx.nonce, *tx.op, tx.signature]
    return [(type(v), v) for v in values] + [type(tx.op)]


def check(data: bytes) -> Tx | None:
    """Assert the two decoders agree on `data`; the fast one's answer."""
    fast = _txfast.decode(data)
    if fast is not None:
        slow = python_decode(data)
        assert slow is not None, f"fast path took bytes the decoder refuses: {data.hex()}"
        assert fast == slow and fields(fast) == fields(slow)
        assert decode_tx(data, PROTOCOL_MAX_TX_BYTES) == slow
    return fast


def encode(chain_id: object, app: object, nonce: object, op: list,
           sender: object = SENDER, signature: object = SIGNATURE) -> bytes:
    return pack([TX_TAG, chain_id, app, sender, nonce, op, signature])


INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, MAX_NONCE]
KEY_SIZES = [1, 31, 32, 255, 256]
VALUE_SIZES = [0, 1, 31, 32, 255, 256, 65535, 65536]
CHAIN_IDS = ["c", "bftnode", "x" * 31, "x" * 32, "x" * 64, "é" * 10, "链" * 21, "🙂" * 16]


def valid_txs() -> list[bytes]:
    out = []
    for chain_id in CHAIN_IDS:
        for nonce in INTS:
            out.append(encode(chain_id, "kvstore", nonce, ["set", b"k", b"v"]))
            out.append(encode(chain_id, "bank", nonce, ["transfer", b"\x07" * 20, nonce or 1]))
    for k in KEY_SIZES:
        for v in VALUE_SIZES:
            out.append(encode("bftnode", "kvstore", 5, ["set", b"k" * k, b"v" * v]))
        out.append(encode("bftnode", "kvstore", 5, ["del", b"k" * k]))
    for amount in INTS[1:] + [MAX_AMOUNT]:
        out.append(encode("bftnode", "bank", 1, ["transfer", "0123456789abcdef" * 2 + "01234567",
                                                 amount]))
    return out


def test_the_compiled_decoder_is_the_one_in_use_when_built() -> None:
    assert tx_decoder_backend() == "cython"


def test_every_usual_valid_tx_is_taken_and_decoded_exactly_as_in_python() -> None:
    for data in valid_txs():
        assert python_decode(data) is not None
        assert check(data) is not None, data.hex()


@pytest.mark.parametrize("bad", [
    encode("", "kvstore", 0, ["set", b"k", b"v"]),                   # empty chain id
    encode("x" * 65, "kvstore", 0, ["set", b"k", b"v"]),             # chain id too long
    encode("c", "kvstorE", 0, ["set", b"k", b"v"]),                  # unknown app
    encode("c", "kvstore", -1, ["set", b"k", b"v"]),                 # negative nonce
    encode("c", "kvstore", 2**63, ["set", b"k", b"v"]),              # nonce too large
    encode("c", "kvstore", True, ["set", b"k", b"v"]),               # bool nonce
    encode("c", "kvstore", 0, ["set", b"", b"v"]),                   # empty key
    encode("c", "kvstore", 0, ["set", b"k" * 257, b"v"]),            # key too long
    encode("c", "kvstore", 0, ["set", b"k", b"v" * 65537]),          # value too long
    encode("c", "kvstore", 0, ["set", "k", b"v"]),                   # str key
    encode("c", "kvstore", 0, ["set", b"k"]),                        # set without value
    encode("c", "kvstore", 0, ["del", b"k", b"v"]),                  # del with a value
    encode("c", "kvstore", 0, ["put", b"k", b"v"]),                  # unknown op
    encode("c", "kvstore", 0, ["transfer", b"\x07" * 20, 1]),        # bank op on kvstore
    encode("c", "bank", 0, ["set", b"k", b"v"]),                     # kvstore op on bank
    encode("c", "bank", 0, ["transfer", b"\x07" * 19, 1]),           # short address
    encode("c", "bank", 0, ["transfer", "0123456789ABCDEF" * 2 + "01234567", 1]),  # upper hex
    encode("c", "bank", 0, ["transfer", "0123456789abcdef" * 2 + "0123456", 1]),   # 39 digits
    encode("c", "bank", 0, ["transfer", b"\x07" * 20, 0]),           # zero amount
    encode("c", "bank", 0, ["transfer", b"\x07" * 20, 2**63]),       # amount too large
    encode("c", "kvstore", 0, ["set", b"k", b"v"], sender=SENDER[:31]),
    encode("c", "kvstore", 0, ["set", b"k", b"v"], signature=SIGNATURE[:63]),
    encode("c", "kvstore", 0, ["set", b"k", b"v"]) + b"\x00",        # trailing byte
    encode("c", "kvstore", 0, ["set", b"k", b"v"])[:-1],             # truncated
])
def test_invalid_txs_are_left_to_the_python_decoder(bad: bytes) -> None:
    assert _txfast.decode(bad) is None
    with pytest.raises(CodecError):
        decode_tx(bad, PROTOCOL_MAX_TX_BYTES)


def test_longer_headers_than_needed_are_not_canonical_and_not_taken() -> None:
    base = encode("c", "kvstore", 5, ["set", b"k", b"v"])
    variants = [
        base.replace(b"\x05\x93", b"\xcc\x05\x93", 1),                     # nonce as uint 8
        base.replace(b"\xa1c", b"\xd9\x01c", 1),                           # chain id as str 8
        base.replace(b"\xc4\x01k\xc4\x01v", b"\xc5\x00\x01k\xc4\x01v", 1),  # key as bin 16
        base.replace(b"\xc4\x01v", b"\xc6\x00\x00\x00\x01v", 1),            # value as bin 32
    ]
    for data in variants:
        assert data != base
        assert _txfast.decode(data) is None
        with pytest.raises(CodecError, match="canonical"):
            decode_tx(data, PROTOCOL_MAX_TX_BYTES)


def test_mutated_txs_never_get_an_answer_the_python_decoder_would_not_give() -> None:
    rng = random.Random(20261207)
    seeds = valid_txs()
    taken = 0
    for _ in range(30_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            i = rng.randrange(len(data))
            if kind < 0.6:
                data[i] = rng.randrange(256)
            elif kind < 0.8:
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
        if check(bytes(data)) is not None:
            taken += 1
    assert taken > 1000   # many mutations (payload bytes) still make valid txs


scalars = st.one_of(st.integers(min_value=-2**64, max_value=2**64 - 1), st.binary(max_size=300),
                    st.text(max_size=70), st.booleans(), st.none())


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_id=st.one_of(st.sampled_from(CHAIN_IDS), scalars),
       app=st.one_of(st.sampled_from(["kvstore", "bank"]), scalars),
       nonce=scalars,
       op=st.one_of(
           st.tuples(st.sampled_from(["set", "del", "transfer"]), scalars, scalars).map(list),
           st.lists(scalars, max_size=4)),
       sender=st.one_of(st.just(SENDER), st.binary(max_size=40)),
       signature=st.one_of(st.just(SIGNATURE), st.binary(max_size=70)))
def test_arbitrary_fields_agree_with_the_python_decoder(chain_id, app, nonce, op, sender,
                                                        signature) -> None:
    try:
        data = encode(chain_id, app, nonce, op, sender, signature)
    except CodecError:
        return
    check(data)

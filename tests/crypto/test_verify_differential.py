"""Differential tests: every verdict equals libsodium's, on valid, invalid and hostile inputs.

The reference is PyNaCl's ``crypto_sign_open`` (libsodium checks a signed
message with ``crypto_sign_verify_detached``), called item by item through a
different path (cffi) than the extension's (dlsym). Hostile inputs come from a
small pure-Python Ed25519 below, which can build what libsodium's signer never
would: small-order keys and R, keys with a torsion component, non-canonical S
and non-canonical point encodings, each signed so that the group equation holds
and only the encoding rule decides the verdict.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from crypto.verify import verify_batch, verify_batch_python, verify_one

# --- A minimal Ed25519 (RFC 8032 section 5.1) over Python integers -------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z
IDENTITY: Point = (0, 1, 1, 0)


def _add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, p: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = _add(result, p)
        p = _add(p, p)
        k >>= 1
    return result


def _neg(p: Point) -> Point:
    return (-p[0] % P, p[1], p[2], -p[3] % P)


def _affine(p: Point) -> tuple[int, int]:
    zinv = pow(p[2], P - 2, P)
    return p[0] * zinv % P, p[1] * zinv % P


def _equal(p: Point, q: Point) -> bool:
    return _affine(p) == _affine(q)


def _x_from_y(y: int, sign: int) -> int | None:
    """The x with parity `sign` on the curve at `y` (any y < 2**255), or None.

    Lenient like a careless decoder: x = 0 is returned whatever `sign` says
    (RFC 8032 rejects the "negative zero" encoding; libsodium must too).
    """
    y %= P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    if v * x * x % P != u:
        return None
    if x == 0:
        return 0
    return x if x & 1 == sign else P - x


def _point(x: int, y: int) -> Point:
    return (x, y, 1, x * y % P)


def encode(p: Point) -> bytes:
    x, y = _affine(p)
    return (y | (x & 1) << 255).to_bytes(32, "little")


def decode(data: bytes) -> Point | None:
    """Lenient decoding (y may be >= p): what a careless verifier would accept."""
    n = int.from_bytes(data, "little")
    y, sign = n & (2**255 - 1), n >> 255
    x = _x_from_y(y, sign)
    return None if x is None else _point(x, y % P)


BASE = _point(_x_from_y(4 * pow(5, P - 2, P) % P, 0), 4 * pow(5, P - 2, P) % P)


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def challenge(r_enc: bytes, pk: bytes, msg: bytes) -> int:
    """k = H(R || A || M) mod L, the scalar a verifier multiplies the key by.

    Reduced mod L first: what k*T is for a torsion point T depends on k mod 8
    *after* that reduction (L is odd).
    """
    return _h(r_enc, pk, msg) % L


def sign_raw(a: int, pk: bytes, msg: bytes, nonce: bytes, extra: Point = IDENTITY) -> bytes:
    """Ed25519 signature by scalar `a` for the (possibly foreign) key encoding `pk`.

    R = rB + extra; S = r + H(R || pk || msg) * a mod L.
    """
    r = _h(nonce, msg) % L
    r_enc = encode(_add(_mul(r, BASE), extra))
    s = (r + challenge(r_enc, pk, msg) * a) % L
    return r_enc + s.to_bytes(32, "little")


@functools.cache
def torsion() -> tuple[Point, ...]:
    """The 8 points of order dividing 8, as k * T for a generator T of the torsion group."""
    for y in range(2, 100):
        x = _x_from_y(y, 0)
        if x is None:
            continue
        t = _mul(L, _point(x, y))  # kills the prime-order part
        if not _equal(_mul(4, t), IDENTITY):
            return tuple(_mul(k, t) for k in range(8))
    raise AssertionError("no point of order 8 found")


@functools.cache
def small_order_encodings() -> tuple[bytes, ...]:
    """Every 32-byte string that leniently decodes to a small-order point.

    The 8 canonical encodings plus the non-canonical ones (y + p where
    y + p < 2**255, and a set sign bit on x = 0): 14 in all.
    """
    found = set()
    for t in torsion():
        x, y = _affine(t)
        for yy in (y, y + P):
            if yy >= 2**255:
                continue
            for sign in (0, 1):
                enc = (yy | sign << 255).to_bytes(32, "little")
                if (x & 1) == sign or x == 0:
                    found.add(enc)
    return tuple(sorted(found))


def non_canonical_y_encodings() -> list[bytes]:
    """All 38 encodings with y >= p (y = p + k for k in 0..18, both sign bits)."""
    return [((P + k) | s << 255).to_bytes(32, "little") for k in range(19) for s in (0, 1)]


# --- The reference -------------------------------------------------------------------


def reference(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """libsodium's verdict through PyNaCl's cffi binding (the lengths rule first)."""
    if len(pk) != 32 or len(sig) != 64:
        return False
    try:
        crypto_sign_open(sig + msg, pk)
    except BadSignatureError:
        return False
    return True


def assert_matches_reference(items: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    pks, msgs, sigs = (list(col) for col in zip(*items, strict=True)) if items else ([], [], [])
    want = [reference(*item) for item in items]
    assert verify_batch(pks, msgs, sigs, threads=1) == want
    assert verify_batch(pks, msgs, sigs) == want
    assert verify_batch_python(pks, msgs, sigs) == want
    for item, w in zip(items, want, strict=True):
        assert verify_one(*item) is w
    return want


# --- Hostile items ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    pk: bytes
    msg: bytes
    sig: bytes
    libsodium_accepts: bool  # what libsodium is documented to answer


SCALAR = _h(b"test key") % L
PK = encode(_mul(SCALAR, BASE))


@functools.cache
def hostile_cases() -> tuple[Case, ...]:
    cases = []
    msg = b"hostile"
    sig = sign_raw(SCALAR, PK, msg, b"n")
    cases.append(Case("valid (pure-Python signer)", PK, msg, sig, True))

    # Non-canonical S: S + L and S + 2L satisfy the group equation but are not < L.
    s = int.from_bytes(sig[32:], "little")
    for k in (1, 2, 15):
        if s + k * L < 2**256:
            cases.append(Case(f"S + {k}L", PK, msg, sig[:32] + (s + k * L).to_bytes(32, "little"),
                              False))
    cases.append(Case("S = L", PK, msg, sig[:32] + L.to_bytes(32, "little"), False))
    cases.append(Case("S all ones", PK, msg, sig[:32] + b"\xff" * 32, False))

    # Small-order public keys, each with a signature that satisfies sB = R + hA: with
    # A of small order it holds when hA = 0, found by trying messages.
    for enc in small_order_encodings():
        a_point = decode(enc)
        for i in range(64):
            m = b"small-order key %d" % i
            r = _h(b"r", m) % L
            r_enc = encode(_mul(r, BASE))
            if _equal(_mul(challenge(r_enc, enc, m) % 8, a_point), IDENTITY):
                forged = r_enc + r.to_bytes(32, "little")
                cases.append(Case(f"small-order key, equation holds, {enc.hex()}", enc, m, forged, False))
                break

    # Small-order R with a key that has a torsion component T: with S = h*a,
    # sB - hA' = -hT, so R = -hT satisfies the equation; only the blocklist of
    # small-order R decides.
    t = torsion()[1]
    mixed = encode(_add(_mul(SCALAR, BASE), t))
    for r_enc in small_order_encodings():
        for i in range(64):
            m = b"small-order R %d" % i
            h = challenge(r_enc, mixed, m)
            if _equal(decode(r_enc), _neg(_mul(h % 8, t))):
                s_val = h * SCALAR % L
                cases.append(Case(f"small-order R, equation holds, {r_enc.hex()}", mixed, m,
                                  r_enc + s_val.to_bytes(32, "little"), False))
                break
    # ... and small-order R with no equation behind it, on a normal key.
    for r_enc in small_order_encodings():
        cases.append(Case(f"small-order R, S = 0, {r_enc.hex()}", PK, msg,
                          r_enc + bytes(32), False))

    # Mixed-order key A' = aB + T: libsodium's check is cofactorless (R == sB - kA'),
    # so it accepts exactly when kT = 0 (k divisible by 8 here) and rejects otherwise.
    accepted = rejected = 0
    for i in range(200):
        m = b"mixed-order key %d" % i
        forged = sign_raw(SCALAR, mixed, m, b"n")
        h = challenge(forged[:32], mixed, m)
        ok = h % 8 == 0
        if (ok and accepted < 3) or (not ok and rejected < 3):
            cases.append(Case(f"mixed-order key, k mod 8 = {h % 8}", mixed, m, forged, ok))
            accepted += ok
            rejected += not ok
        if accepted >= 3 and rejected >= 3:
            break
    # Mixed-order R: R = rB + T, accepted only when R's torsion cancels, which it does not.
    cases.append(Case("mixed-order R", PK, msg, sign_raw(SCALAR, PK, msg, b"m", extra=t), False))

    # Non-canonical key encodings (y >= p): only y = p + k, k < 19, fit in 255 bits;
    # nobody knows the discrete log of those points, so any signature will do.
    for enc in non_canonical_y_encodings():
        cases.append(Case(f"non-canonical key {enc.hex()}", enc, msg, sig, False))
    # Non-canonical key whose point is the identity (y = p + 1), signed for it: sB = R.
    ident_nc = (P + 1).to_bytes(32, "little")
    r = _h(b"r", b"nc") % L
    r_enc = encode(_mul(r, BASE))
    cases.append(Case("non-canonical identity key, equation holds", ident_nc, b"nc",
                      r_enc + r.to_bytes(32, "little"), False))
    # Non-canonical R: the y + p encoding of a small-order R.
    for enc in small_order_encodings():
        if int.from_bytes(enc, "little") & (2**255 - 1) >= P:
            cases.append(Case(f"non-canonical R {enc.hex()}", PK, msg, enc + sig[32:], False))
    # Sign bit set on x = 0 for the key ("negative zero").
    neg_zero = (1 | 1 << 255).to_bytes(32, "little")
    cases.append(Case("negative-zero identity key", neg_zero, msg, sig, False))
    # Not a point at all (no x for this y).
    for y in range(2, 40):
        if _x_from_y(y, 0) is None:
            cases.append(Case(f"off-curve key y={y}", y.to_bytes(32, "little"), msg, sig, False))
            break
    return tuple(cases)


def test_pure_python_signer_agrees_with_libsodium() -> None:
    # Guards the helper itself: same key, message and nonce rule as RFC 8032.
    signer = SigningKey(b"\x42" * 32)
    digest = hashlib.sha512(b"\x42" * 32).digest()
    a = int.from_bytes(digest[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    pk = bytes(signer.verify_key)
    assert encode(_mul(a, BASE)) == pk
    msg = b"agree"
    r = _h(digest[32:], msg) % L
    r_enc = encode(_mul(r, BASE))
    s = (r + _h(r_enc, pk, msg) * a) % L
    assert r_enc + s.to_bytes(32, "little") == signer.sign(msg).signature


def test_small_order_encodings_are_the_known_fourteen() -> None:
    encs = small_order_encodings()
    assert len(encs) == 14
    assert bytes(32) in encs  # (0, 0)... y = 0: order 4
    assert (1).to_bytes(32, "little") in encs  # the identity
    assert bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05") in encs
    assert all(_equal(_mul(8, decode(e)), IDENTITY) for e in encs)


@pytest.mark.parametrize("case", hostile_cases(), ids=lambda c: c.name)
def test_hostile_case(case: Case) -> None:
    assert reference(case.pk, case.msg, case.sig) is case.libsodium_accepts
    assert verify_one(case.pk, case.msg, case.sig) is case.libsodium_accepts
    assert verify_batch([case.pk], [case.msg], [case.sig]) == [case.libsodium_accepts]


def test_hostile_cases_cover_every_kind() -> None:
    cases = hostile_cases()
    names = " ".join(c.name for c in cases)
    for kind in ("S + 1L", "S = L", "non-canonical key", "non-canonical R", "negative-zero",
                 "mixed-order R", "off-curve key"):
        assert kind in names
    # Every small-order encoding, as a key and as R, with the group equation holding.
    assert sum(c.name.startswith("small-order key, equation holds") for c in cases) == 14
    assert sum(c.name.startswith("small-order R, equation holds") for c in cases) == 14
    # Mixed-order keys: both verdicts occur, so the cofactorless rule is pinned down.
    mixed = [c.libsodium_accepts for c in cases if c.name.startswith("mixed-order key")]
    assert True in mixed and False in mixed


def test_all_hostile_cases_in_one_parallel_batch() -> None:
    items = [(c.pk, c.msg, c.sig) for c in hostile_cases()] * 3
    want = assert_matches_reference(items)
    assert want == [c.libsodium_accepts for c in hostile_cases()] * 3


# --- Hypothesis: random batches of valid, corrupted and hostile items -----------------

KEYS = [SigningKey(bytes([k]) * 32) for k in range(8)]
PUBLIC_KEYS = [bytes(k.verify_key) for k in KEYS]


@st.composite
def items(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    kind = draw(st.sampled_from(["valid", "valid", "flip", "swap", "hostile", "random", "sizes"]))
    key = draw(st.integers(0, len(KEYS) - 1))
    msg = draw(st.binary(max_size=300))
    pk, sig = PUBLIC_KEYS[key], KEYS[key].sign(msg).signature
    if kind == "flip":
        which = draw(st.sampled_from(["pk", "msg", "sig"]))
        blob = bytearray({"pk": pk, "msg": msg, "sig": sig}[which])
        if not blob:
            blob = bytearray(b"\x00")
        bit = draw(st.integers(0, len(blob) * 8 - 1))
        blob[bit // 8] ^= 1 << (bit % 8)
        pk, msg, sig = (bytes(blob) if which == w else v
                        for w, v in (("pk", pk), ("msg", msg), ("sig", sig)))
    elif kind == "swap":
        pk = PUBLIC_KEYS[(key + draw(st.integers(1, len(KEYS) - 1))) % len(KEYS)]
    elif kind == "hostile":
        case = draw(st.sampled_from(hostile_cases()))
        pk, msg, sig = case.pk, case.msg, case.sig
    elif kind == "random":
        pk, sig = draw(st.binary(min_size=32, max_size=32)), draw(st.binary(min_size=64,
                                                                            max_size=64))
    elif kind == "sizes":
        pk = draw(st.binary(max_size=40))
        sig = draw(st.binary(max_size=70))
    return pk, msg, sig


DIFF_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@DIFF_SETTINGS
@given(st.lists(items(), max_size=12))
def test_small_batches_match_libsodium(batch: list[tuple[bytes, bytes, bytes]]) -> None:
    assert_matches_reference(batch)


@DIFF_SETTINGS
@given(st.lists(items(), min_size=60, max_size=140))
def test_batches_over_the_thread_threshold_match_libsodium(
    batch: list[tuple[bytes, bytes, bytes]],
) -> None:
    assert_matches_reference(batch)


@settings(max_examples=200, deadline=None)
@given(pk=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=64),
       sig=st.binary(min_size=64, max_size=64))
def test_arbitrary_bytes_match_libsodium(pk: bytes, msg: bytes, sig: bytes) -> None:
    assert verify_one(pk, msg, sig) is reference(pk, msg, sig)

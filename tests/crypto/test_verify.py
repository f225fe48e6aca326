"""The batch verifier's contract: RFC 8032 vectors, shapes, threads, the fallback, scale.

Edge-case encodings and the differential tests against libsodium are in
test_verify_differential.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

import crypto
from crypto import verify as verify_module
from crypto.verify import verify_batch, verify_batch_python, verify_one, verify_one_python

# RFC 8032 section 7.1, Ed25519: (name, secret key, public key, message, signature).
RFC8032_VECTORS = [
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST 1024",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
        "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
        "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
        "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
        "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
        "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
        "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
        "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
        "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
        "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
        "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
        "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
        "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
        "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
        "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
        "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
        "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
        "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
        "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
        "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
        "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
        "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
        "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
        "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
        "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
        "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
        "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
        "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
        "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
        "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
        "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
        "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0",
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]
VECTORS = [
    (name, bytes.fromhex(sk), bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig))
    for name, sk, pk, msg, sig in RFC8032_VECTORS
]
VECTOR_IDS = [v[0] for v in VECTORS]

BOTH_BACKENDS = pytest.mark.parametrize(
    "batch", [verify_batch, verify_batch_python], ids=["verify_batch", "python_fallback"]
)


def _signed(count: int, keys: int = 16, seed: int = 0) -> tuple[list, list, list]:
    """`count` valid (pk, msg, sig) items from `keys` deterministic keys."""
    signers = [SigningKey(bytes([seed, k]) * 16) for k in range(keys)]
    pks, msgs, sigs = [], [], []
    for i in range(count):
        signer = signers[i % keys]
        msg = f"tx {seed}/{i}".encode()
        pks.append(bytes(signer.verify_key))
        msgs.append(msg)
        sigs.append(signer.sign(msg).signature)
    return pks, msgs, sigs


def test_backend_is_the_compiled_extension() -> None:
    # The build compiles crypto._verify; a silent fallback would cut throughput by the
    # number of cores, so the test suite insists on it.
    assert crypto.verifier_backend() == "cython"


@pytest.mark.parametrize("name,sk,pk,msg,sig", VECTORS, ids=VECTOR_IDS)
def test_rfc8032_vector(name: str, sk: bytes, pk: bytes, msg: bytes, sig: bytes) -> None:
    signer = SigningKey(sk)
    assert bytes(signer.verify_key) == pk
    assert signer.sign(msg).signature == sig
    assert verify_one(pk, msg, sig) is True
    assert verify_one_python(pk, msg, sig) is True
    tampered = sig[:10] + bytes([sig[10] ^ 0x40]) + sig[11:]
    assert verify_one(pk, msg, tampered) is False
    assert verify_one(pk, msg + b"\x00", sig) is False


@BOTH_BACKENDS
def test_rfc8032_vectors_as_one_batch(batch) -> None:
    pks = [v[2] for v in VECTORS]
    msgs = [v[3] for v in VECTORS]
    sigs = [v[4] for v in VECTORS]
    # Each signature against the next vector's key: all wrong.
    rotated = pks[1:] + pks[:1]
    assert batch(pks + rotated, msgs + msgs, sigs + sigs) == [True] * 5 + [False] * 5


@BOTH_BACKENDS
def test_empty_batch(batch) -> None:
    assert batch([], [], []) == []


@BOTH_BACKENDS
def test_batch_of_one(batch) -> None:
    pks, msgs, sigs = _signed(1)
    assert batch(pks, msgs, sigs) == [True]
    assert batch(pks, [b"other"], sigs) == [False]


@BOTH_BACKENDS
@pytest.mark.parametrize("lengths", [(0, 1, 1), (1, 0, 1), (1, 1, 0), (3, 3, 2)])
def test_mismatched_lengths_raise(batch, lengths: tuple[int, int, int]) -> None:
    pks, msgs, sigs = _signed(3)
    with pytest.raises(ValueError, match="as many"):
        batch(pks[: lengths[0]], msgs[: lengths[1]], sigs[: lengths[2]])


@pytest.mark.parametrize("threads", [0, -1])
def test_threads_below_one_raise(threads: int) -> None:
    pks, msgs, sigs = _signed(2)
    with pytest.raises(ValueError, match="threads"):
        verify_batch(pks, msgs, sigs, threads=threads)


@BOTH_BACKENDS
def test_wrong_lengths_and_types_are_false_not_errors(batch) -> None:
    (pk,), (msg,), (sig,) = _signed(1)
    items = [
        (pk, msg, sig, True),
        (pk[:31], msg, sig, False),
        (pk + b"\x00", msg, sig, False),
        (b"", msg, sig, False),
        (pk, msg, sig[:63], False),
        (pk, msg, sig + b"\x00", False),
        (pk, msg, b"", False),
        (pk, msg, sig[:32], False),  # a 32-byte "signature" beside a 32-byte key
        (None, msg, sig, False),
        (pk, "text", sig, False),
        (pk, msg, 64, False),  # bytes(64) would be 64 zero bytes: never converted
        (pk.hex(), msg, sig, False),
        (bytearray(pk), msg, sig, True),  # bytes-like inputs are accepted
        (pk, memoryview(msg), bytearray(sig), True),
        (memoryview(b"x" + pk)[1:], msg, sig, True),
    ]
    got = batch([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])
    assert got == [i[3] for i in items]
    for pk_i, msg_i, sig_i, want in items:
        assert verify_one(pk_i, msg_i, sig_i) is want
        assert verify_one_python(pk_i, msg_i, sig_i) is want


@BOTH_BACKENDS
def test_empty_message(batch) -> None:
    signer = SigningKey(b"\x07" * 32)
    pk, sig = bytes(signer.verify_key), signer.sign(b"").signature
    assert batch([pk, pk], [b"", b"\x00"], [sig, sig]) == [True, False]


def test_accepts_any_sequence_and_iterables() -> None:
    pks, msgs, sigs = _signed(5)
    assert verify_batch(tuple(pks), iter(msgs), (s for s in sigs)) == [True] * 5


@pytest.mark.parametrize("count", [1, 63, 64, 65, 200, 1000])
def test_threads_one_and_all_cores_agree(count: int) -> None:
    # Sizes around the parallel threshold (64) and over several 16-item chunks.
    pks, msgs, sigs = _signed(count, seed=count % 256)
    for i in range(0, count, 7):
        msgs[i] = msgs[i] + b"!"
    expected = [i % 7 != 0 for i in range(count)]
    assert verify_batch(pks, msgs, sigs, threads=1) == expected
    assert verify_batch(pks, msgs, sigs, threads=None) == expected
    assert verify_batch(pks, msgs, sigs, threads=7) == expected


def test_more_threads_than_items_or_cores() -> None:
    pks, msgs, sigs = _signed(100)
    assert verify_batch(pks, msgs, sigs, threads=1000) == [True] * 100


def test_list_mutated_after_call_does_not_change_verdicts() -> None:
    # The extension takes its own references (tuples) before it drops the GIL.
    pks, msgs, sigs = _signed(70)
    first = verify_batch(pks, msgs, sigs, threads=2)
    msgs.clear()
    assert first == [True] * 70


@pytest.mark.timeout(120)
def test_hundred_thousand_items_checked_position_by_position() -> None:
    # A few seconds: 100,000 libsodium verifications (~50 us each) over all cores.
    # 1,000 distinct signed items are tiled: signing 100,000 in Python would
    # cost more than verifying them.
    count = 100_000
    base_pks, base_msgs, base_sigs = _signed(1000, keys=50, seed=9)
    pks = [base_pks[i % 1000] for i in range(count)]
    msgs = [base_msgs[i % 1000] for i in range(count)]
    sigs = [base_sigs[i % 1000] for i in range(count)]
    expected = [True] * count
    # Invalid items scattered over the batch, including both ends and chunk edges.
    bad = sorted({0, 15, 16, 17, 4_999, 31_337, 50_000, 65_535, 77_777, 99_998, 99_999}
                 | set(range(123, count, 9_973)))
    for n, i in enumerate(bad):
        kind = n % 4
        if kind == 0:
            sigs[i] = sigs[i][:40] + bytes([sigs[i][40] ^ 1]) + sigs[i][41:]
        elif kind == 1:
            msgs[i] = msgs[i] + b"x"
        elif kind == 2:
            pks[i] = base_pks[(i + 1) % 1000]
        else:
            sigs[i] = sigs[i][:63]
        expected[i] = False
    got = verify_batch(pks, msgs, sigs)
    assert len(got) == count
    mismatches = [i for i in range(count) if got[i] is not expected[i]]
    assert mismatches == []


def test_python_fallback_matches_the_extension_on_mixed_items() -> None:
    pks, msgs, sigs = _signed(300, seed=3)
    for i in range(0, 300, 5):
        sigs[i] = bytes(64)
    for i in range(1, 300, 11):
        pks[i] = os.urandom(32)
    assert verify_batch_python(pks, msgs, sigs) == verify_batch(pks, msgs, sigs)


def test_fallback_backend_logs_one_warning(monkeypatch, caplog) -> None:
    # Simulate a missing extension: the public functions switch to the PyNaCl loop.
    monkeypatch.setattr(verify_module, "_verify", None)
    monkeypatch.setattr(verify_module, "_import_error", ImportError("not built"))
    monkeypatch.setattr(verify_module, "_fallback_warned", False)
    pks, msgs, sigs = _signed(3)
    with caplog.at_level(logging.WARNING, logger="crypto.verify"):
        assert verify_module.verifier_backend() == "python"
        assert verify_module.verify_batch(pks, msgs, sigs) == [True] * 3
        assert verify_module.verify_one(pks[0], msgs[0], sigs[1]) is False
        assert verify_module.verify_batch(pks, msgs, sigs, threads=1) == [True] * 3
    warnings = [r for r in caplog.records if "pure-Python" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(ValueError, match="threads"):
        verify_module.verify_batch(pks, msgs, sigs, threads=0)


def test_import_falls_back_when_the_extension_is_missing() -> None:
    # The real import path, in a fresh interpreter where crypto._verify cannot be imported.
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(message)s')\n"
        "sys.modules['crypto._verify'] = None  # makes `from crypto import _verify` fail\n"
        "import crypto\n"
        "from nacl.signing import SigningKey\n"
        "k = SigningKey(bytes(32)); pk = bytes(k.verify_key); sig = k.sign(b'm').signature\n"
        "print(crypto.verifier_backend())\n"
        "print(crypto.verify_batch([pk, pk], [b'm', b'n'], [sig, sig]))\n"
        "print(crypto.verify_one(pk, b'm', sig))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=root, timeout=60, check=True).stdout.splitlines()
    assert out[0] == "python"
    assert out[-2:] == ["[True, False]", "True"]
    assert sum("pure-Python" in line for line in out) == 1

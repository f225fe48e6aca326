"""Ed25519 identity keys: signing, 0600 key files and address derivation."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from crypto import KeyFileError, PrivateKey, address, load_private_key, node_id, save_private_key
from crypto.verify import verify_one


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_sign_verify() -> None:
    key = PrivateKey.generate()
    sig = key.sign(b"hello")
    assert len(key.public_key) == 32 and len(sig) == 64
    assert verify_one(key.public_key, b"hello", sig) is True
    assert verify_one(key.public_key, b"hellO", sig) is False
    assert verify_one(PrivateKey.generate().public_key, b"hello", sig) is False


def test_generated_keys_differ_and_seeds_are_deterministic() -> None:
    assert PrivateKey.generate().seed != PrivateKey.generate().seed
    seed = bytes(range(32))
    a, b = PrivateKey.from_seed(seed), PrivateKey(seed)
    assert a.public_key == b.public_key
    assert a.sign(b"m") == b.sign(b"m")  # Ed25519 signatures are deterministic


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_seed_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PrivateKey(bytes(size))


def test_save_load_roundtrip_with_mode_0600(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "config" / "node_key.json"  # parent created on save
    save_private_key(key, path)
    assert _mode(path) == 0o600
    loaded = load_private_key(path)
    assert loaded.seed == key.seed and loaded.public_key == key.public_key
    assert json.loads(path.read_text())["public_key"] == key.public_key.hex()
    assert [p.name for p in path.parent.iterdir()] == ["node_key.json"]  # no temp file left


def test_save_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_private_key(PrivateKey.generate(), tmp_path / "k.json")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k.json") == 0o600


def test_save_overwrites_a_world_readable_file_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("old")
    path.chmod(0o644)
    save_private_key(PrivateKey.generate(), path)
    assert _mode(path) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_load_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    save_private_key(PrivateKey.generate(), path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600"):
        load_private_key(path)


def test_load_accepts_0400(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    key = PrivateKey.generate()
    save_private_key(key, path)
    path.chmod(0o400)
    assert load_private_key(path).seed == key.seed


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_private_key(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "body,reason",
    [
        ("not json", "malformed"),
        ('{"type": "ed25519"}', "malformed"),
        ('{"type": "ed25519", "seed": "zz"}', "malformed"),
        ('{"type": "ed25519", "seed": "00"}', "malformed"),
        ('{"type": "rsa", "seed": "00"}', "unsupported key type"),
        ('{"type": "ed25519", "seed": "' + "00" * 32 + '", "public_key": "' + "00" * 32 + '"}',
         "does not match"),
    ],
)
def test_load_refuses_malformed_files(tmp_path: Path, body: str, reason: str) -> None:
    path = tmp_path / "k.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, body.encode())
    os.close(fd)
    with pytest.raises(KeyFileError, match=reason):
        load_private_key(path)


def test_key_file_error_is_a_crypto_error() -> None:
    from crypto import CryptoError

    assert issubclass(KeyFileError, CryptoError)


def test_address_is_first_20_bytes_of_sha256_in_hex() -> None:
    key = PrivateKey.from_seed(b"\x01" * 32)
    expected = hashlib.sha256(key.public_key).digest()[:20].hex()
    assert address(key.public_key) == expected == key.address == node_id(key.public_key)
    assert len(expected) == 40 and expected == expected.lower()
    int(expected, 16)  # hex digits only


def test_address_known_value() -> None:
    # sha256 of 32 zero bytes = 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925
    assert address(bytes(32)) == "66687aadf862bd776c8fc18b8e9f8e2008971485"


@pytest.mark.parametrize("size", [0, 20, 31, 33])
def test_address_of_wrong_size_key_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        address(bytes(size))


def test_repr_shows_the_address_not_the_seed() -> None:
    key = PrivateKey.generate()
    assert key.address in repr(key)
    assert key.seed.hex() not in repr(key)


def test_load_refuses_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"[]")
    os.close(fd)
    with pytest.raises(KeyFileError, match="malformed"):
        load_private_key(path)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_private_key(path)

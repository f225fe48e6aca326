"""The wire codec shared by consensus and node: msgpack with hard limits.

Every byte string that comes from a peer or a client goes through `unpack` (or
`decode`, which adds the message-type dispatch), and every failure of any kind
comes out as one exception type, `CodecError`. Nothing else escapes: not
msgpack's own exceptions, not UnicodeDecodeError, not RecursionError.

Format rules (DESIGN section 4):
- msgpack with ``use_bin_type=True``; ext types are refused;
- a message is an array whose first element is a small integer type tag;
- sign bytes are ``domain tag || 0x00 || msgpack([chain_id, *fields])``, one
  domain tag per message kind, so a signature for one kind or one chain is
  never valid for another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 16
MAX_CONTAINER_LEN = 1_000_000
MAX_STR_LEN = 1 << 20


class CodecError(ValueError):
    """Bytes that are not a well-formed, in-limits message of a known type."""


@dataclass(frozen=True)
class Limits:
    """Bounds applied while decoding untrusted input."""

    max_bytes: int = MAX_MESSAGE_BYTES
    max_depth: int = MAX_DEPTH
    max_container_len: int = MAX_CONTAINER_LEN
    max_str_len: int = MAX_STR_LEN


DEFAULT_LIMITS = Limits()


def _refuse_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"msgpack ext type {code} is not allowed")


def pack(obj: Any) -> bytes:
    """Canonical msgpack encoding of plain values (int, bytes, str, bool, None, list)."""
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode value: {exc}") from None


def check_depth(obj: Any, max_depth: int) -> None:
    """Raise CodecError if `obj` nests containers deeper than `max_depth` levels."""
    # Level by level, keeping only containers: a flat message costs one pass over it.
    level = [obj] if type(obj) is list or type(obj) is dict else []
    depth = 1
    while level:
        if depth > max_depth:
            raise CodecError(f"message nests deeper than {max_depth} levels")
        deeper: list[Any] = []
        for value in level:
            items = value if type(value) is list else [x for kv in value.items() for x in kv]
            deeper.extend(v for v in items if type(v) is list or type(v) is dict)
        level = deeper
        depth += 1


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS, walk_depth: bool = True) -> Any:
    """Decode one msgpack value from untrusted `data`, enforcing `limits`.

    `walk_depth=False` leaves `limits.max_depth` to the caller (`check_depth`), for
    a decoder that knows its message's shape and checks it more cheaply."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the {limits.max_bytes}-byte limit")
    if len(data) == 0:
        raise CodecError("empty message")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_bin_len=limits.max_bytes,
            max_str_len=min(limits.max_str_len, limits.max_bytes),
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=0,
        )
    except CodecError:
        raise
    except RecursionError:
        raise CodecError(f"message nests deeper than {limits.max_depth} levels") from None
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise CodecError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    if walk_depth:
        check_depth(obj, limits.max_depth)
    return obj


def sign_bytes(domain: bytes, chain_id: str, fields: Iterable[Any]) -> bytes:
    """Domain-separated bytes to sign: ``domain || 0x00 || pack([chain_id, *fields])``."""
    return domain + b"\x00" + pack([chain_id, *fields])


# --- field checks used by validate() methods --------------------------------------------


def expect_int(value: Any, name: str, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
    if type(value) is not int:
        raise CodecError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise CodecError(f"{name}={value} is outside [{lo}, {hi}]")
    return value


def expect_bytes(value: Any, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise CodecError(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise CodecError(f"{name} must be {size} bytes, got {len(value)}")
    if max_size is not None and len(value) > max_size:
        raise CodecError(f"{name} is {len(value)} bytes, more than {max_size}")
    return value


def expect_optional_bytes(value: Any, name: str, size: int) -> bytes | None:
    return None if value is None else expect_bytes(value, name, size=size)


def expect_str(value: Any, name: str, max_len: int = 256) -> str:
    if type(value) is not str:
        raise CodecError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise CodecError(f"{name} is longer than {max_len} characters")
    return value


def expect_list(value: Any, name: str, max_len: int = MAX_CONTAINER_LEN,
                length: int | None = None) -> list:
    if type(value) is not list:
        raise CodecError(f"{name} must be an array, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise CodecError(f"{name} must have {length} elements, got {len(value)}")
    if len(value) > max_len:
        raise CodecError(f"{name} has {len(value)} elements, more than {max_len}")
    return value


def expect_bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise CodecError(f"{name} must be a boolean, got {type(value).__name__}")
    return value


# --- tagged messages ---------------------------------------------------------------------


class WireMessage:
    """Base for a message that travels as ``[TAG, *fields]``.

    Subclasses set ``TAG``, implement ``to_fields()`` and ``from_fields()`` and
    ``validate()``. ``from_fields`` may assume nothing about its input:
    `decode` catches TypeError/ValueError/IndexError raised while building and
    turns them into CodecError, then calls ``validate()``.
    """

    TAG: ClassVar[int]

    def to_fields(self) -> list[Any]:
        raise NotImplementedError

    @classmethod
    def from_fields(cls, fields: list[Any]) -> WireMessage:
        raise NotImplementedError

    def validate(self) -> None:
        raise NotImplementedError

    def encode(self) -> bytes:
        return pack([self.TAG, *self.to_fields()])


M = TypeVar("M", bound=type[WireMessage])


class Registry:
    """Maps type tags to message classes for one link (peer, mempool, client...)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._by_tag: dict[int, type[WireMessage]] = {}

    def register(self, cls: M) -> M:
        tag = cls.TAG
        if tag in self._by_tag and self._by_tag[tag] is not cls:
            raise ValueError(f"{self.name}: tag {tag} already used by {self._by_tag[tag].__name__}")
        self._by_tag[tag] = cls
        return cls

    def classes(self) -> dict[int, type[WireMessage]]:
        return dict(self._by_tag)

    def decode(self, data: bytes, limits: Limits = DEFAULT_LIMITS) -> WireMessage:
        """Decode and validate one message; any problem raises CodecError."""
        obj = unpack(data, limits)
        return self.from_obj(obj)

    def from_obj(self, obj: Any) -> WireMessage:
        if type(obj) is not list or not obj:
            raise CodecError(f"{self.name} message must be a non-empty array")
        tag = obj[0]
        if type(tag) is not int:
            raise CodecError(f"{self.name} message type tag must be an integer")
        cls = self._by_tag.get(tag)
        if cls is None:
            raise CodecError(f"unknown {self.name} message type {tag}")
        try:
            msg = cls.from_fields(obj[1:])
        except CodecError:
            raise
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise CodecError(f"malformed {cls.__name__}: {exc}") from None
        msg.validate()
        return msg


def registry_decoder(registry: Registry) -> Callable[[bytes], WireMessage]:
    return registry.decode

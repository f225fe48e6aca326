# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled fast path of `node.tx.decode_tx` for the transaction every wallet sends.

`decode(data)` returns the `Tx` that `decode_tx(data)` returns, or None: then
`decode_tx` decodes `data` itself and decides. Every node decodes every tx, and
the Python decoder (msgpack, then the field checks, then a re-encoding to prove
the bytes canonical) costs ~4 us a tx; this costs well under one.

It takes only the canonical encoding (what `Tx.encode` writes) of a tx of the
usual shape with every field inside `Tx.validate`'s rules::

    0x97 0x40 chain_id app sender nonce op signature    (array of 7; tag 64)

- chain_id: a str of 1-64 characters (valid UTF-8); app: "kvstore" or "bank"; a
  str header as msgpack writes it (fixstr below 32 bytes, str 8 up to 255);
- sender: bin 8 of 32 bytes; signature: bin 8 of 64 bytes, the last bytes;
- nonce: an unsigned int in its shortest form (fixint, uint 8/16/32/64), at most
  2^63 - 1;
- op: kvstore ["set", key, value] or ["del", key], key a bin of 1-256 bytes and value a
  bin of at most 64 KiB (shortest bin header); bank ["transfer", to, amount], to a bin
  of 20 bytes or a str of 40 lowercase hex digits, amount an unsigned int in
  [1, 2^63 - 1].

Anything else (another shape, a longer header than needed, a value out of range)
returns None, so every refusal and its message still come from the Python decoder,
and a node with this module and one without accept the same bytes with the same
results: an app hash cannot split on it. tests/node/test_txfast.py holds the two
against each other on valid, boundary and mutated txs.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcmp

cdef object _Tx = None
cdef object _new = object.__new__
cdef unsigned long long _MAX_INT = (1ULL << 63) - 1

# The op names and apps as the Python decoder yields them (equal strs).
cdef str _SET = "set"
cdef str _DEL = "del"
cdef str _TRANSFER = "transfer"
cdef str _KVSTORE = "kvstore"
cdef str _BANK = "bank"


def bind(tx_class):
    """Set the class `decode` builds (node.tx.Tx; bound there, so no import cycle)."""
    global _Tx
    _Tx = tx_class


cdef inline Py_ssize_t _body(Py_ssize_t n, Py_ssize_t i, Py_ssize_t length, Py_ssize_t *pos):
    """`length` if that many bytes follow a header that ends at i (pos[0] moved to i),
    else -1."""
    if length > n - i:
        return -1
    pos[0] = i
    return length


cdef inline Py_ssize_t _str_len(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos):
    """Byte length of the str whose shortest header is at pos[0] (moved past the
    header), or -1."""
    cdef Py_ssize_t i = pos[0]
    cdef Py_ssize_t length
    if i >= n:
        return -1
    if 0xa0 <= p[i] <= 0xbf:
        length = p[i] & 0x1f
        i += 1
    elif p[i] == 0xd9 and i + 1 < n and p[i + 1] >= 32:
        length = p[i + 1]
        i += 2
    else:
        return -1
    return _body(n, i, length, pos)


cdef inline Py_ssize_t _bin_len(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos):
    """Byte length of the bin whose shortest header is at pos[0] (moved past it), or -1."""
    cdef Py_ssize_t i = pos[0]
    cdef Py_ssize_t length
    if i + 1 >= n:
        return -1
    if p[i] == 0xc4:
        length = p[i + 1]
        i += 2
    elif p[i] == 0xc5 and i + 2 < n:
        length = (p[i + 1] << 8) | p[i + 2]
        if length < 256:
            return -1
        i += 3
    elif p[i] == 0xc6 and i + 4 < n:
        length = ((<Py_ssize_t>p[i + 1] << 24) | (p[i + 2] << 16) | (p[i + 3] << 8)
                  | p[i + 4])
        if length < 65536:
            return -1
        i += 5
    else:
        return -1
    return _body(n, i, length, pos)


cdef object _bin(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos, Py_ssize_t lo,
                 Py_ssize_t hi):
    """The bytes of the bin of lo-hi bytes at pos[0] (moved past it), or None."""
    cdef Py_ssize_t length = _bin_len(p, n, pos)
    if length < lo or length > hi:
        return None
    value = PyBytes_FromStringAndSize(<const char *>p + pos[0], length)
    pos[0] += length
    return value


cdef inline int _uint(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                      unsigned long long *out):
    """The unsigned int in its shortest form at pos[0] (moved past it), at most
    2^63 - 1: 0, or -1 if there is none."""
    cdef Py_ssize_t i = pos[0]
    cdef unsigned long long v = 0
    cdef int size, k
    if i >= n:
        return -1
    if p[i] <= 0x7f:
        out[0] = p[i]
        pos[0] = i + 1
        return 0
    if p[i] == 0xcc:
        size = 1
    elif p[i] == 0xcd:
        size = 2
    elif p[i] == 0xce:
        size = 4
    elif p[i] == 0xcf:
        size = 8
    else:
        return -1
    if size > n - i - 1:
        return -1
    for k in range(size):
        v = (v << 8) | p[i + 1 + k]
    # Shortest form: a value that fits the next smaller format is written in it.
    if ((size == 1 and v < 0x80) or (size == 2 and v < 0x100)
            or (size == 4 and v < 0x10000) or (size == 8 and v < 0x100000000ULL)):
        return -1
    if v > _MAX_INT:
        return -1
    out[0] = v
    pos[0] = i + 1 + size
    return 0


cdef inline bint _is_name(const unsigned char *p, Py_ssize_t n, Py_ssize_t pos,
                          const char *name, Py_ssize_t length):
    """Whether a fixstr holding exactly `name` starts at pos."""
    return (length < 32 and pos + 1 + length <= n and p[pos] == 0xa0 + length
            and memcmp(p + pos + 1, name, length) == 0)


cdef inline bint _lower_hex(const unsigned char *p, Py_ssize_t length):
    cdef Py_ssize_t k
    for k in range(length):
        if not (0x30 <= p[k] <= 0x39 or 0x61 <= p[k] <= 0x66):
            return False
    return True


def decode(bytes data):
    """The Tx `node.tx.decode_tx(data)` gives, for a canonical tx of the usual shape
    within every rule; None for anything else (decode it the general way)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = 2
    cdef Py_ssize_t length
    cdef unsigned long long nonce, amount
    cdef bint kvstore
    if _Tx is None or n < 2 or p[0] != 0x97 or p[1] != 0x40:
        return None
    # chain_id: 1-64 characters of valid UTF-8.
    length = _str_len(p, n, &pos)
    if length <= 0:
        return None
    try:
        chain_id = PyUnicode_DecodeUTF8(<const char *>p + pos, length, NULL)
    except UnicodeDecodeError:
        return None
    if len(chain_id) > 64:
        return None
    pos += length
    # app
    if _is_name(p, n, pos, b"kvstore", 7):
        app, kvstore = _KVSTORE, True
        pos += 8
    elif _is_name(p, n, pos, b"bank", 4):
        app, kvstore = _BANK, False
        pos += 5
    else:
        return None
    # sender, nonce
    sender = _bin(p, n, &pos, 32, 32)
    if sender is None or _uint(p, n, &pos, &nonce) < 0:
        return None
    # op
    if pos >= n:
        return None
    if kvstore:
        if p[pos] == 0x93 and _is_name(p, n, pos + 1, b"set", 3):
            pos += 5
            key = _bin(p, n, &pos, 1, 256)
            value = None if key is None else _bin(p, n, &pos, 0, 65536)
            if value is None:
                return None
            op = (_SET, key, value)
        elif p[pos] == 0x92 and _is_name(p, n, pos + 1, b"del", 3):
            pos += 5
            key = _bin(p, n, &pos, 1, 256)
            if key is None:
                return None
            op = (_DEL, key)
        else:
            return None
    else:
        if not (p[pos] == 0x93 and _is_name(p, n, pos + 1, b"transfer", 8)):
            return None
        pos += 10
        if pos + 22 <= n and p[pos] == 0xc4 and p[pos + 1] == 20:
            to = PyBytes_FromStringAndSize(<const char *>p + pos + 2, 20)
            pos += 22
        elif (pos + 42 <= n and p[pos] == 0xd9 and p[pos + 1] == 40
                and _lower_hex(p + pos + 2, 40)):
            to = PyUnicode_DecodeUTF8(<const char *>p + pos + 2, 40, NULL)
            pos += 42
        else:
            return None
        if _uint(p, n, &pos, &amount) < 0 or amount < 1:
            return None
        op = (_TRANSFER, to, amount)
    # signature, and nothing after it
    signature = _bin(p, n, &pos, 64, 64)
    if signature is None or pos != n:
        return None
    tx = _new(_Tx)
    tx.__dict__.update(chain_id=chain_id, app=app, sender=sender, nonce=nonce, op=op,
                       signature=signature)
    return tx

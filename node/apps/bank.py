"""`bank`: accounts with balances and nonces, signed transfers, genesis allocations.

An account is a 20-byte address (``crypto.address(public_key)``). State layout::

    b"a/" + address -> u64be balance || u64be next nonce

An address the state has never written holds its genesis allocation (0 if it
has none) and nonce 0. Genesis is configuration every validator has, so it
needs no writes at height 0, and once touched an account is always stored
explicitly (a zero balance included), so it never falls back to genesis. The
genesis app hash commits to the allocations.

Transfer rules, in order: the sender's nonce must be its next nonce (else
BAD_NONCE, no change); then balance >= amount (else INSUFFICIENT_FUNDS) and
recipient balance + amount <= MAX_AMOUNT (else BALANCE_OVERFLOW), both of which
still consume the nonce. A transfer to oneself only consumes the nonce.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from consensus.codec import pack
from node.apps import (
    CODE_BAD_NONCE,
    CODE_BALANCE_OVERFLOW,
    CODE_INSUFFICIENT_FUNDS,
    CODE_OK,
    App,
    AppError,
    AppState,
)
from node.tx import ADDRESS_BYTES, MAX_AMOUNT, Tx, recipient

ACCOUNT_PREFIX = b"a/"
_ACCOUNT = struct.Struct(">QQ")


def parse_address(address: str | bytes) -> bytes:
    """A 20-byte address from its bytes or its 40-char hex spelling."""
    if isinstance(address, bytes):
        raw = address
    else:
        try:
            raw = bytes.fromhex(address)
        except ValueError:
            raise AppError(f"address {address!r} is not hex") from None
    if len(raw) != ADDRESS_BYTES:
        raise AppError(f"address must be {ADDRESS_BYTES} bytes, got {len(raw)}")
    return raw


class Bank(App):
    """The bank app (see the module docstring).

    `genesis` maps addresses (hex or bytes) to initial balances in [0, MAX_AMOUNT].
    """

    name = "bank"

    def __init__(self, state: AppState, genesis: Mapping[str | bytes, int],
                 height: int = 0, app_hash: bytes | None = None) -> None:
        self.genesis: dict[bytes, int] = {}
        for addr, amount in genesis.items():
            if type(amount) is not int or not 0 <= amount <= MAX_AMOUNT:
                raise AppError(f"genesis balance of {addr!r} must be an integer in [0, {MAX_AMOUNT}]")
            self.genesis[parse_address(addr)] = amount
        super().__init__(state, height=height, app_hash=app_hash)

    def balance(self, address: str | bytes) -> int:
        """Committed balance of `address`."""
        raw = parse_address(address)
        return self._account(self._state.get(ACCOUNT_PREFIX + raw), raw)[0]

    def nonce(self, address: str | bytes) -> int:
        """Committed next nonce of `address`."""
        return self.next_nonce(parse_address(address))

    def next_nonce(self, address: bytes) -> int:
        return self._account(self._state.get(ACCOUNT_PREFIX + address), address)[1]

    def _account(self, raw: bytes | None, address: bytes) -> tuple[int, int]:
        if raw is None:
            return self.genesis.get(address, 0), 0
        return _ACCOUNT.unpack(raw)

    def _genesis_encoding(self) -> bytes:
        return pack([[addr, amount] for addr, amount in sorted(self.genesis.items())])

    def _check(self, tx: Tx) -> tuple[int, str]:
        balance, _ = self._account(self._state.get(ACCOUNT_PREFIX + tx.sender_address),
                                   tx.sender_address)
        amount = tx.op[2]
        if amount > balance:
            return CODE_INSUFFICIENT_FUNDS, f"balance {balance} is less than amount {amount}"
        return CODE_OK, ""

    def _apply(self, tx: Tx) -> int:
        sender = tx.sender_address
        sender_key = ACCOUNT_PREFIX + sender
        balance, nonce = self._account(self._get(sender_key), sender)
        if tx.nonce != nonce:
            return CODE_BAD_NONCE
        to = recipient(tx.op)
        amount = tx.op[2]
        code = CODE_OK
        if amount > balance:
            code = CODE_INSUFFICIENT_FUNDS
        elif to != sender:
            to_key = ACCOUNT_PREFIX + to
            to_balance, to_nonce = self._account(self._get(to_key), to)
            if to_balance + amount > MAX_AMOUNT:
                code = CODE_BALANCE_OVERFLOW
            else:
                balance -= amount
                self._put(to_key, _ACCOUNT.pack(to_balance + amount, to_nonce))
        self._put(sender_key, _ACCOUNT.pack(balance, nonce + 1))
        return code

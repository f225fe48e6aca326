"""Equivocation tracking: turning two conflicting votes into evidence, once.

The engine keeps one vote per validator per (height, round, kind); when a validly
signed second vote with a different value arrives from the same validator, it hands
both to `EquivocationTracker.report`. The tracker builds the `DuplicateVoteEvidence`,
makes sure each offence (validator, kind, height, round) is reported only once (a
byzantine validator resending its conflicting votes must not flood the host), and
keeps a bounded list of evidence not yet taken by the host, e.g. to include in a block.
"""

from __future__ import annotations

from collections import OrderedDict

from consensus.types import DuplicateVoteEvidence, Vote, VoteKind

OffenceKey = tuple[bytes, VoteKind, int, int]


class EquivocationTracker:
    """Deduplicates equivocations and holds the evidence found, bounded in memory."""

    def __init__(self, max_pending: int = 1024) -> None:
        self.max_pending = max_pending
        self._reported: OrderedDict[OffenceKey, None] = OrderedDict()
        self._pending: list[DuplicateVoteEvidence] = []

    def report(self, first: Vote, second: Vote) -> DuplicateVoteEvidence | None:
        """Evidence for `first` and `second` (both already verified, same validator, kind,
        height and round, different values), or None if this offence was reported before."""
        key: OffenceKey = (first.validator, first.kind, first.height, first.round)
        if key in self._reported:
            return None
        self._reported[key] = None
        if len(self._reported) > 4 * self.max_pending:
            self._reported.popitem(last=False)
        evidence = DuplicateVoteEvidence(first, second)
        self._pending.append(evidence)
        if len(self._pending) > self.max_pending:
            del self._pending[0]
        return evidence

    def take_pending(self) -> list[DuplicateVoteEvidence]:
        """The evidence found since the last call (oldest first), emptying the list."""
        pending, self._pending = self._pending, []
        return pending

    def prune(self, below_height: int) -> None:
        """Forget offences below `below_height`; their votes can no longer arrive."""
        for key in [k for k in self._reported if k[2] < below_height]:
            del self._reported[key]


__all__ = ["EquivocationTracker"]

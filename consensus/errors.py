"""Exceptions raised by the consensus package."""

from consensus.codec import CodecError


class ConsensusError(Exception):
    """Base class for consensus errors other than decoding."""


class InvalidMessage(ConsensusError):
    """A message that decoded but breaks a protocol rule (bad signature, wrong validator...)."""


class SafetyViolation(ConsensusError):
    """SafetyRules refused to sign: signing would conflict with something already signed."""


__all__ = ["CodecError", "ConsensusError", "InvalidMessage", "SafetyViolation"]

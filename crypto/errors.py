"""Exceptions raised by the crypto package."""


class CryptoError(Exception):
    """Base class for every error raised by `crypto`."""


class KeyFileError(CryptoError):
    """A key file is missing, malformed, or readable by users other than its owner."""


class HandshakeError(CryptoError):
    """A secure-channel handshake failed: bad transcript, unknown peer or replay."""


class ChannelError(CryptoError):
    """A secure-channel frame failed authentication or broke a framing rule."""

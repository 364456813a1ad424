"""The errors every dispy package raises, under one root.

    DispyError
    ├── ConfigError            an option or argument is out of range or malformed
    ├── ProtocolError          a peer sent bytes that are not a valid dispy frame/message
    │   ├── FrameTooLarge      a frame header announces more than the allowed size
    │   └── ProtocolVersionError  the peer speaks another protocol version
    ├── AuthenticationError    the challenge-response or a frame's MAC did not verify
    ├── ConnectionClosed       the peer closed the connection (or we did)
    ├── PythonVersionError     client and node run Python versions that can't share pickles
    └── ComputationError       a node refused or failed to set up a computation

Each error's docstring says when it is raised; messages name the peer and the values
involved so that a user can act on them without reading the source.
"""

from __future__ import annotations

__all__ = [
    "DispyError",
    "ConfigError",
    "ProtocolError",
    "FrameTooLarge",
    "ProtocolVersionError",
    "AuthenticationError",
    "ConnectionClosed",
    "PythonVersionError",
    "ComputationError",
]


class DispyError(Exception):
    """Root of every error raised by dispy packages."""


class ConfigError(DispyError, ValueError):
    """Raised when an option or argument is malformed or out of range (bad CPU count...)."""


class ProtocolError(DispyError):
    """Raised when the peer sent something that is not a valid dispy frame or message.

    This is the *peer's* fault (garbage on the port, a corrupted stream); the connection
    is unusable afterwards and is closed.
    """


class FrameTooLarge(ProtocolError):
    """Raised when a frame header announces a body larger than the receiver accepts."""


class ProtocolVersionError(ProtocolError):
    """Raised when the peer speaks another dispy protocol version; names both versions."""


class AuthenticationError(DispyError):
    """Raised when the handshake fails (different secrets) or a frame's MAC is wrong."""


class ConnectionClosed(DispyError):
    """Raised when using a connection that the peer closed or that we closed."""


class PythonVersionError(DispyError):
    """Raised when a Python function can't be shipped to a node: the node runs another
    Python minor version, and cloudpickled bytecode is specific to one version."""


class ComputationError(DispyError):
    """Raised when a node refuses a computation or its setup fails."""

"""The two-party protocol: Alice (satellite) and Bob (ground) exchanging authenticated messages.

``channel`` holds the typed, authenticated, accounted message channel (in-memory and TCP).
"""

from satqkd.protocol.channel import (
    AuthenticationError,
    ChannelClosed,
    ChannelError,
    ChannelStats,
    ChannelTimeout,
    CodecError,
    Endpoint,
    Message,
    PeerAborted,
    ProtocolError,
    TcpEndpoint,
    decode,
    encode,
    memory_pair,
    tcp_pair,
)

__all__ = [
    "AuthenticationError",
    "ChannelClosed",
    "ChannelError",
    "ChannelStats",
    "ChannelTimeout",
    "CodecError",
    "Endpoint",
    "Message",
    "PeerAborted",
    "ProtocolError",
    "TcpEndpoint",
    "decode",
    "encode",
    "memory_pair",
    "tcp_pair",
]

//! Why a connection ends: one enum for the close code sent to the client
//! (docs/PROTOCOL.md §4), the reason text and the metric label.

/// The reason a session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or the TCP connection ended.
    ClientGone,
    /// No valid token (first frame), or the connection was revoked.
    Unauthorized(String),
    /// The token reached `exp` without a refresh.
    TokenExpired,
    /// Closed by the server API (`POST /api/v1/disconnect`).
    Disconnected(String),
    /// The send queue overflowed or a write stalled.
    SlowConsumer,
    /// Sustained flooding past the per-connection rate limit.
    RateLimited,
    /// An inbound frame exceeded `ws.max_frame_bytes`.
    MessageTooBig,
    /// A policy refusal after the upgrade (too many connections).
    Policy(String),
    /// The node is draining: reconnect elsewhere.
    Draining,
    /// Nothing received for two heartbeat intervals.
    HeartbeatTimeout,
    /// A WebSocket protocol violation by the client.
    Protocol(String),
    /// Something failed on our side (e.g. the broker refused a join).
    Internal(String),
    /// A durable room lost continuity on this node (a gap its history could
    /// not fill, or a new epoch): resume, and learn what was recovered.
    InsufficientState,
}

impl CloseReason {
    /// The WebSocket close code sent to the client.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::ClientGone | CloseReason::HeartbeatTimeout => 1000,
            CloseReason::Protocol(_) => 1002,
            CloseReason::Policy(_) => 1008,
            CloseReason::MessageTooBig => 1009,
            CloseReason::Internal(_) | CloseReason::InsufficientState => 1011,
            CloseReason::Draining => 1012,
            CloseReason::Unauthorized(_) | CloseReason::TokenExpired | CloseReason::Disconnected(_) => 4001,
            CloseReason::RateLimited => 4008,
            CloseReason::SlowConsumer => 4009,
        }
    }

    /// The close frame's reason text (at most 123 bytes on the wire).
    pub fn text(&self) -> String {
        let text = match self {
            CloseReason::ClientGone => "bye",
            CloseReason::Unauthorized(m)
            | CloseReason::Disconnected(m)
            | CloseReason::Policy(m)
            | CloseReason::Protocol(m)
            | CloseReason::Internal(m) => m.as_str(),
            CloseReason::TokenExpired => "token expired",
            CloseReason::SlowConsumer => "slow consumer: send queue full",
            CloseReason::RateLimited => "rate limit exceeded",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::Draining => "server restarting: reconnect",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::InsufficientState => "insufficient state: resume from your positions",
        };
        let mut end = text.len().min(123);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    }

    /// Bounded label for `wsgate_connections_closed_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::ClientGone => "client",
            CloseReason::Unauthorized(_) => "unauthorized",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Disconnected(_) => "disconnected",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::Policy(_) => "policy",
            CloseReason::Draining => "draining",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::Protocol(_) => "protocol_error",
            CloseReason::Internal(_) => "internal",
            CloseReason::InsufficientState => "insufficient_state",
        }
    }

    /// Whether a close frame is worth sending (the peer may still read).
    pub fn sends_frame(&self) -> bool {
        !matches!(self, CloseReason::ClientGone)
    }
}

//! The one close path, and how a failed read or write maps to a close reason.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::{Session, WsStream};
use crate::close::CloseReason;
use crate::metrics::Metrics;

/// How long a closing socket may take to send our close frame and answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

impl Session {
    /// The close path of every registered connection.
    pub(super) async fn finish(self: Box<Self>, reason: CloseReason) {
        let mut this = *self;
        this.conn.close(reason.clone());
        // Out of every room first: nothing more is queued for it.
        let rooms = this.gw.hub.unregister(&this.conn);
        Metrics::connection_closed(reason.label(), this.conn.transport);
        match &reason {
            CloseReason::ClientGone => tracing::debug!("client left"),
            reason => tracing::debug!(code = reason.code(), reason = reason.label(), "closing"),
        }
        send_close(&mut this.ws, &reason).await;
        drop(this.ws);
        this.gw.release_rooms(rooms).await;
    }
}

/// Send the close frame (if the peer may still read) and wait briefly for
/// its answer, so the client sees the code rather than a reset.
pub(super) async fn send_close(ws: &mut WsStream, reason: &CloseReason) {
    if !reason.sends_frame() {
        // The client closed: tungstenite has queued the reply to its close
        // frame; flush it so the client sees a clean close, not a reset.
        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
        return;
    }
    let frame = CloseFrame {
        code: reason.code().into(),
        reason: reason.text().into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The close reason of a failed read or write.
pub(super) fn classify(error: WsError) -> CloseReason {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Capacity(_) => CloseReason::MessageTooBig,
        // The client dropped the TCP connection without a close frame.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseReason::ClientGone,
        WsError::Protocol(p) => CloseReason::Protocol(p.to_string()),
        WsError::Utf8(_) => CloseReason::Protocol("invalid UTF-8 in a text frame".into()),
        _ => CloseReason::ClientGone,
    }
}

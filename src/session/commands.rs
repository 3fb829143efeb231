//! Client commands (docs/PROTOCOL.md §2): subscribe, unsubscribe, publish, refresh,
//! presence (§12), ping. Each answers with `ack`/`pong` or an `error` carrying the request's
//! `ref`; a refused command never ends the connection.

use super::publisher::MAX_IN_FLIGHT;
use super::{CloseReason, Session, instant_of_unix};
use crate::broker::Position;
use crate::gateway::JoinError;
use crate::metrics::Metrics;
use crate::permissions::Action;
use crate::protocol::{
    BackendEvent, ClientFrame, Command, ErrorCode, encode_ack, encode_ack_with_position, encode_error, encode_pong,
    encode_presence, encode_refresh_ack,
};
use crate::room::RoomName;

impl Session {
    pub(super) async fn on_text(&mut self, text: &str) -> Option<CloseReason> {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(error) => {
                Metrics::client_frame("invalid");
                self.reply_error(error.reference.as_deref(), ErrorCode::BadRequest, &error.message);
                return None;
            }
        };
        Metrics::client_frame(frame.command.kind());
        let reference = frame.reference.as_deref();
        match frame.command {
            Command::Auth { .. } => self.reply_error(reference, ErrorCode::BadRequest, "already authenticated"),
            Command::Subscribe { room, since } => self.subscribe(reference, room, since).await,
            Command::Unsubscribe { room } => self.unsubscribe(reference, room).await,
            Command::Publish {
                room,
                event,
                data,
                echo,
            } => {
                let skip = (!echo).then(|| self.conn_id.clone());
                let from = self.identity.user_id.clone();
                let payload = BackendEvent {
                    event: event.into(),
                    data: Some(&data),
                    id: None,
                    from: Some(from.as_ref().into()),
                    skip: skip.map(Into::into),
                };
                self.publish(reference, room, payload).await
            }
            Command::Refresh { token } => self.refresh(reference, &token).await,
            Command::Presence { room } => self.presence(reference, room).await,
            Command::Ping => self.reply(encode_pong(reference)),
        }
        None
    }

    pub(super) fn reply_error(&self, reference: Option<&str>, code: ErrorCode, message: &str) {
        Metrics::command_error(code.as_str());
        self.reply(encode_error(reference, code, message));
    }

    async fn subscribe(&mut self, reference: Option<&str>, room: RoomName, since: Option<Position>) {
        if self.conn.has_room(&room) {
            if since.is_some() {
                return self.reply_error(
                    reference,
                    ErrorCode::BadRequest,
                    &format!("already subscribed to {room}: a resume needs a new subscription"),
                );
            }
            return self.reply(encode_ack(reference, None));
        }
        if !self.gw.permissions.allows(&self.identity, &room, Action::Read) {
            return self.reply_error(
                reference,
                ErrorCode::Forbidden,
                &format!("not allowed to subscribe to {room}"),
            );
        }
        let max = self.gw.config.limits.max_rooms_per_connection;
        if self.conn.room_count() >= max {
            return self.reply_error(
                reference,
                ErrorCode::LimitExceeded,
                &format!("at most {max} rooms per connection"),
            );
        }
        if since.is_some() && !self.gw.is_durable(&room) {
            // Nothing to resume from: say so rather than pretend.
            return self.reply_error(
                reference,
                ErrorCode::BadRequest,
                &format!("{room} keeps no history (history.namespaces): subscribe without 'since'"),
            );
        }
        // The ack is queued by the join, before the missed events it sends.
        let ack = |joined: &crate::protocol::Joined| Some(encode_ack_with_position(reference, joined));
        match self.gw.join(&self.conn, &room, since.as_ref(), ack).await {
            Ok(Some(_)) => {}
            Ok(None) => self.reply(encode_ack(reference, None)),
            Err(JoinError::Ahead(position)) => self.reply_error(
                reference,
                ErrorCode::BadRequest,
                &format!("'since' is ahead of {room}: its offset is {}", position.offset),
            ),
            Err(JoinError::Broker(error)) => {
                tracing::warn!(conn_id = %self.conn_id, user_id = %self.identity.user_id, %room, %error, "subscribe failed");
                self.reply_error(reference, ErrorCode::Internal, "broker unavailable: retry later");
            }
        }
    }

    /// The room's users, cluster-wide: for whoever may subscribe to it.
    async fn presence(&mut self, reference: Option<&str>, room: RoomName) {
        if !self.gw.permissions.allows(&self.identity, &room, Action::Read) {
            return self.reply_error(
                reference,
                ErrorCode::Forbidden,
                &format!("not allowed to subscribe to {room}, so not to list its presence"),
            );
        }
        if !self.gw.presence.tracks(&room) {
            return self.reply_error(
                reference,
                ErrorCode::BadRequest,
                &format!("{room} has no presence (its namespace is not in presence.namespaces)"),
            );
        }
        match self.gw.presence.list(&room).await {
            Ok(users) => self.reply(encode_presence(reference, room.as_str(), &users)),
            Err(error) => {
                tracing::warn!(conn_id = %self.conn_id, user_id = %self.identity.user_id, %room, %error, "presence read failed");
                self.reply_error(reference, ErrorCode::Internal, "broker unavailable: retry later");
            }
        }
    }

    async fn unsubscribe(&mut self, reference: Option<&str>, room: RoomName) {
        if self.gw.leave(&self.conn, &room).await {
            self.reply(encode_ack(reference, None));
        } else {
            self.reply_error(reference, ErrorCode::NotFound, &format!("not subscribed to {room}"));
        }
    }

    async fn publish(&mut self, reference: Option<&str>, room: RoomName, event: BackendEvent<'_>) {
        if !self.gw.permissions.allows(&self.identity, &room, Action::Publish) {
            return self.reply_error(
                reference,
                ErrorCode::Forbidden,
                &format!("not allowed to publish to {room}"),
            );
        }
        let payload = bytes::Bytes::from(event.to_payload());
        // Refused here at once, rather than after the queue of publishes.
        if let Err(error) = self.gw.check_event_size(&payload) {
            return self.reply_error(reference, ErrorCode::LimitExceeded, &error.to_string());
        }
        // The broker's answer comes back through the queue: the loop goes on.
        if !self.publisher.submit(&self.gw, &self.conn, reference, room, payload) {
            self.reply_error(
                reference,
                ErrorCode::RateLimited,
                &format!(
                    "too many publishes waiting for the broker (at most {MAX_IN_FLIGHT}, and ws.send_queue_bytes): slow down"
                ),
            );
        }
    }

    /// A valid token for the same user moves the expiry and replaces the
    /// connection's grants (PROTOCOL.md §2): rooms the new token no longer
    /// entitles are left, its own rooms it did not have are joined. Anything
    /// else is an error and the connection stays as it was.
    async fn refresh(&mut self, reference: Option<&str>, token: &str) {
        let identity = match self.gw.authenticate_now(token) {
            Err(error) => {
                Metrics::auth_failure(error.reason());
                return self.reply_error(reference, ErrorCode::Unauthorized, &error.to_string());
            }
            Ok(identity) if identity.user_id != self.identity.user_id => {
                Metrics::auth_failure("refresh_other_user");
                return self.reply_error(reference, ErrorCode::Forbidden, "token is for another user");
            }
            Ok(identity) => identity,
        };
        // What the new token may read is what the connection keeps: its own
        // user/org/role rooms by the room rules, the others by its grants.
        let mut left = Vec::new();
        for room in self.conn.rooms() {
            if !self.gw.permissions.allows(&identity, &room, Action::Read) && self.gw.leave(&self.conn, &room).await {
                left.push(room);
            }
        }
        let max_rooms = self.gw.config.limits.max_rooms_per_connection;
        let own: Vec<RoomName> = identity.own_rooms().into_iter().take(max_rooms).collect();
        let mut joined = Vec::new();
        for room in &own {
            if self.conn.has_room(room) || self.conn.room_count() >= max_rooms {
                continue;
            }
            match self.gw.join(&self.conn, room, None, |_| None).await {
                Ok(Some(position)) => joined.push((room.clone(), position)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(conn_id = %self.conn_id, user_id = %identity.user_id, %room, %error, "refresh could not join a token room");
                }
            }
        }
        self.expires = instant_of_unix(identity.expires_at);
        let rooms: Vec<RoomName> = own.into_iter().filter(|room| self.conn.has_room(room)).collect();
        self.reply(encode_refresh_ack(
            reference,
            identity.expires_at,
            &rooms,
            &left,
            &joined,
        ));
        self.identity = identity;
    }
}

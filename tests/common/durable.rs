//! Clients that count: each records every offset each durable room gave
//! it, across reconnects, and resumes from its last positions, so a test
//! can assert none lost, none duplicated, none out of order.

use std::collections::BTreeMap;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Frame, Refusal, Ws, next_frame, open};

/// What one room delivered to one client.
#[derive(Debug, Default, Clone)]
pub struct RoomLedger {
    pub epoch: String,
    /// The position to resume from: the last offset received or given.
    pub offset: u64,
    /// The position the first welcome gave: counting starts after it.
    pub start: u64,
    /// Every offset received, in arrival order.
    pub got: Vec<u64>,
    /// How often a resume came back `recovered:false`.
    pub not_recovered: u32,
    pub recovered: u32,
}

/// The verdict on one room.
#[derive(Debug, PartialEq, Eq)]
pub struct Audit {
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
}

impl RoomLedger {
    /// Compare with the offsets `start+1 ..= through`.
    pub fn audit(&self, through: u64) -> Audit {
        let mut seen = std::collections::BTreeSet::new();
        let mut duplicated = 0;
        let mut out_of_order = 0;
        let mut last = 0;
        for &offset in &self.got {
            if !seen.insert(offset) {
                duplicated += 1;
            } else if offset < last {
                out_of_order += 1;
            }
            last = last.max(offset);
        }
        let lost = (self.start + 1..=through).filter(|o| !seen.contains(o)).count();
        Audit {
            lost,
            duplicated,
            out_of_order,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub rooms: BTreeMap<String, RoomLedger>,
}

impl Ledger {
    /// The `since` map of the auth frame.
    pub fn since(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .rooms
            .iter()
            .map(|(room, l)| (room.clone(), json!({"offset": l.offset, "epoch": l.epoch})))
            .collect();
        Value::Object(map)
    }

    pub fn room(&self, room: &str) -> &RoomLedger {
        self.rooms.get(room).unwrap_or_else(|| panic!("no ledger for {room}"))
    }

    /// A welcome (or a subscribe ack, with `room`): take the positions;
    /// on `recovered:false`, continue from the position given.
    pub fn on_positions(&mut self, room: &str, position: &Value, recovered: Option<bool>) {
        let offset = position["offset"].as_u64().expect("position offset");
        let epoch = position["epoch"].as_str().expect("position epoch").to_string();
        match self.rooms.get_mut(room) {
            None => {
                self.rooms.insert(
                    room.to_string(),
                    RoomLedger {
                        epoch,
                        offset,
                        start: offset,
                        ..RoomLedger::default()
                    },
                );
            }
            Some(ledger) => match recovered {
                Some(true) => ledger.recovered += 1,
                _ => {
                    ledger.not_recovered += 1;
                    ledger.epoch = epoch;
                    ledger.offset = offset;
                }
            },
        }
    }

    pub fn on_welcome(&mut self, welcome: &Value) {
        if let Some(positions) = welcome["positions"].as_object() {
            for (room, position) in positions {
                let recovered = welcome["recovered"][room].as_bool();
                self.on_positions(room, position, recovered);
            }
        }
    }

    /// An event frame: record its offset. Panics on an epoch it was not told.
    pub fn on_event(&mut self, frame: &Value) {
        let (Some(room), Some(offset)) = (frame["room"].as_str(), frame["offset"].as_u64()) else {
            return;
        };
        let ledger = self
            .rooms
            .get_mut(room)
            .unwrap_or_else(|| panic!("event of {room} before its position"));
        assert_eq!(frame["epoch"].as_str(), Some(ledger.epoch.as_str()), "epoch of {frame}");
        ledger.got.push(offset);
        ledger.offset = offset;
    }
}

/// A client that connects with the auth frame and resumes from its ledger.
pub struct Resumer {
    pub token: String,
    pub ws: Option<Ws>,
    pub ledger: Ledger,
    pub welcomes: u32,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Reached,
    Closed(u16),
    Gone,
}

impl Resumer {
    pub fn new(token: String) -> Self {
        Self {
            token,
            ws: None,
            ledger: Ledger::default(),
            welcomes: 0,
        }
    }

    /// Connect (or reconnect) to `url`, resuming every room of the ledger.
    pub async fn connect(&mut self, url: &str) -> Result<Value, Refusal> {
        let mut ws = open(url, &[]).await?;
        let auth = json!({"type": "auth", "token": self.token, "since": self.ledger.since()});
        ws.send(Message::text(auth.to_string())).await.expect("send auth");
        match next_frame(&mut ws).await {
            Frame::Json(welcome) => {
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                self.ledger.on_welcome(&welcome);
                self.welcomes += 1;
                self.ws = Some(ws);
                Ok(welcome)
            }
            Frame::Close(code, reason) => Err(Refusal::Closed(code, reason)),
            Frame::Gone => Err(Refusal::Closed(1006, "gone".into())),
        }
    }

    /// Read until `room` has reached `offset` or the socket closes.
    pub async fn read_until(&mut self, room: &str, offset: u64) -> Stop {
        loop {
            if self.ledger.rooms.get(room).is_some_and(|l| l.offset >= offset) {
                return Stop::Reached;
            }
            let Some(ws) = self.ws.as_mut() else { return Stop::Gone };
            match next_frame(ws).await {
                Frame::Json(frame) => {
                    if frame["type"] == "event" {
                        self.ledger.on_event(&frame);
                    }
                }
                Frame::Close(code, _) => {
                    self.ws = None;
                    return Stop::Closed(code);
                }
                Frame::Gone => {
                    self.ws = None;
                    return Stop::Gone;
                }
            }
        }
    }

    /// Drop the connection without a close frame.
    pub fn drop_connection(&mut self) {
        self.ws = None;
    }
}

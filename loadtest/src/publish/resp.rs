//! A minimal Redis client that does one thing fast: pipelined `PUBLISH`,
//! or `FCALL wsgate_publish 1 <channel> <payload>` (a durable publish,
//! PROTOCOL.md §10). The writer sends whole batches of commands in one
//! write; a reader task counts the replies: `PUBLISH`'s `:n` is the number
//! of subscribers that got the message, `FCALL`'s the event's offset in its
//! room, kept in command order. A semaphore caps the commands awaiting a
//! reply, so a slow Redis slows the publisher instead of growing a buffer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

use super::Failures;
use tokio::task::JoinHandle;

/// Commands sent but not yet answered, at most.
const MAX_IN_FLIGHT: usize = 16 * 1024;

/// The Redis function a durable publish calls.
pub const PUBLISH_FUNCTION: &str = "wsgate_publish";

/// Which command carries each event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `PUBLISH <channel> <payload>`: answers the subscribers reached.
    Publish,
    /// `FCALL wsgate_publish 1 <channel> <payload>`: answers the offset.
    Fcall,
}

#[derive(Debug, Default)]
pub struct Replies {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    /// `PUBLISH`: the sum of the integer replies, subscriber connections reached.
    pub receivers: AtomicU64,
    /// `FCALL`: each command's offset, in command order (0 for an error).
    pub offsets: Mutex<Vec<u64>>,
    pub failures: Mutex<Failures>,
}

pub struct RespPublisher {
    command: Command,
    writer: OwnedWriteHalf,
    in_flight: Arc<Semaphore>,
    replies: Arc<Replies>,
    reader: JoinHandle<()>,
    sent: u64,
    buffer: Vec<u8>,
}

/// `redis://[user][:password]@host:port[/db]` → (host:port, user, password).
pub fn parse_url(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("{url}: only redis:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((credentials, host_port)) => (Some(credentials), host_port),
        None => (None, authority),
    };
    if host_port.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let host_port = if host_port.contains(':') && !host_port.ends_with(']') {
        host_port.to_string()
    } else {
        format!("{host_port}:6379")
    };
    let (user, password) = match credentials {
        None => (None, None),
        Some(c) => match c.split_once(':') {
            Some((user, password)) => ((!user.is_empty()).then(|| user.to_string()), Some(password.to_string())),
            None => (None, Some(c.to_string())),
        },
    };
    Ok((host_port, user, password))
}

/// One command in RESP: an array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

impl RespPublisher {
    pub async fn connect(url: &str, command: Command) -> Result<RespPublisher, String> {
        let (address, user, password) = parse_url(url)?;
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&address))
            .await
            .map_err(|_| format!("redis {address}: connect timed out"))?
            .map_err(|e| format!("redis {address}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, mut writer) = stream.into_split();
        let mut read = BufReader::new(read);
        if let Some(password) = password {
            let mut auth = Vec::new();
            match &user {
                Some(user) => encode(&mut auth, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut auth, &[b"AUTH", password.as_bytes()]),
            }
            writer.write_all(&auth).await.map_err(|e| e.to_string())?;
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut line))
                .await
                .map_err(|_| "redis AUTH: no answer".to_string())?
                .map_err(|e| e.to_string())?;
            if !line.starts_with('+') {
                return Err(format!("redis AUTH refused: {}", line.trim()));
            }
        }
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let replies = Arc::new(Replies::default());
        let reader = tokio::spawn(read_replies(read, command, in_flight.clone(), replies.clone()));
        Ok(RespPublisher {
            command,
            writer,
            in_flight,
            replies,
            reader,
            sent: 0,
            buffer: Vec::with_capacity(64 * 1024),
        })
    }

    /// The command for each (channel, payload) pair, in one write per chunk.
    pub async fn publish(&mut self, batch: &[(String, String)]) -> Result<(), String> {
        for chunk in batch.chunks(MAX_IN_FLIGHT) {
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let permits = self
                .in_flight
                .acquire_many(n)
                .await
                .map_err(|_| "the connection to redis ended".to_string())?;
            // Given back one by one by the reader, as the replies arrive.
            permits.forget();
            self.buffer.clear();
            for (channel, payload) in chunk {
                let (channel, payload) = (channel.as_bytes(), payload.as_bytes());
                match self.command {
                    Command::Publish => encode(&mut self.buffer, &[b"PUBLISH", channel, payload]),
                    Command::Fcall => encode(
                        &mut self.buffer,
                        &[b"FCALL", PUBLISH_FUNCTION.as_bytes(), b"1", channel, payload],
                    ),
                }
            }
            self.writer
                .write_all(&self.buffer)
                .await
                .map_err(|e| format!("redis write: {e}"))?;
            self.sent += chunk.len() as u64;
        }
        Ok(())
    }

    pub fn replies(&self) -> Arc<Replies> {
        self.replies.clone()
    }

    /// Wait (at most `wait`) for every reply, then close the connection.
    pub async fn finish(self, wait: Duration) -> Arc<Replies> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.replies.ok.load(Relaxed) + self.replies.errors.load(Relaxed) < self.sent
            && tokio::time::Instant::now() < deadline
            && !self.reader.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.reader.abort();
        self.replies
    }
}

async fn read_replies(
    read: BufReader<OwnedReadHalf>,
    command: Command,
    in_flight: Arc<Semaphore>,
    replies: Arc<Replies>,
) {
    count_replies(read, command, &in_flight, &replies).await;
    // Wakes a publisher waiting for permits that will never come back.
    in_flight.close();
}

async fn count_replies(mut read: BufReader<OwnedReadHalf>, command: Command, in_flight: &Semaphore, replies: &Replies) {
    let mut line = String::new();
    // Replies come in the order of the commands: the n-th is event n's.
    let mut seq: u64 = 0;
    loop {
        line.clear();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = parse_reply(&line);
        if command == Command::Fcall {
            super::lock(&replies.offsets).push(match reply {
                Reply::Integer(n) => n,
                _ => 0,
            });
        }
        match reply {
            Reply::Integer(n) => {
                if command == Command::Publish {
                    replies.receivers.fetch_add(n, Relaxed);
                }
                replies.ok.fetch_add(1, Relaxed);
            }
            Reply::Error => {
                replies.errors.fetch_add(1, Relaxed);
                super::lock(&replies.failures).add(seq, line.trim());
            }
            // Both commands answer integers only; anything else ends the
            // reader rather than be misread.
            Reply::Other => {
                replies.errors.fetch_add(1, Relaxed);
                super::lock(&replies.failures).add(seq, &format!("unexpected reply: {}", line.trim()));
                return;
            }
        }
        seq += 1;
        in_flight.add_permits(1);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// `:n` (a negative or unreadable number reads as 0).
    Integer(u64),
    /// `-ERR ...`
    Error,
    Other,
}

fn parse_reply(line: &str) -> Reply {
    match line.as_bytes().first() {
        Some(b':') => Reply::Integer(line[1..].trim().parse().unwrap_or(0)),
        Some(b'-') => Reply::Error,
        _ => Reply::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_integers_errors_or_the_end_of_reading() {
        assert_eq!(parse_reply(":17\r\n"), Reply::Integer(17));
        assert_eq!(parse_reply(":-1\r\n"), Reply::Integer(0));
        assert_eq!(parse_reply("-ERR Function not found\r\n"), Reply::Error);
        assert_eq!(parse_reply("+OK\r\n"), Reply::Other);
        assert_eq!(parse_reply("$5\r\n"), Reply::Other);
    }

    #[test]
    fn commands_are_encoded_as_resp_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"PUBLISH", b"gw:org:lt", b"{}"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$9\r\ngw:org:lt\r\n$2\r\n{}\r\n");
        out.clear();
        encode(
            &mut out,
            &[b"FCALL", PUBLISH_FUNCTION.as_bytes(), b"1", b"gw:org:lt", b"{}"],
        );
        assert_eq!(
            out,
            b"*5\r\n$5\r\nFCALL\r\n$14\r\nwsgate_publish\r\n$1\r\n1\r\n$9\r\ngw:org:lt\r\n$2\r\n{}\r\n"
        );
    }

    #[test]
    fn urls_give_address_and_credentials() {
        assert_eq!(
            parse_url("redis://127.0.0.1:7000"),
            Ok(("127.0.0.1:7000".into(), None, None))
        );
        assert_eq!(
            parse_url("redis://localhost"),
            Ok(("localhost:6379".into(), None, None))
        );
        assert_eq!(
            parse_url("redis://:pw@127.0.0.1:7000/0"),
            Ok(("127.0.0.1:7000".into(), None, Some("pw".into())))
        );
        assert_eq!(
            parse_url("redis://me:pw@127.0.0.1:7000"),
            Ok(("127.0.0.1:7000".into(), Some("me".into()), Some("pw".into())))
        );
        assert!(parse_url("http://127.0.0.1").is_err());
    }
}

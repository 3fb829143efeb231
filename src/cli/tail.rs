//! `wsgate tail`: a minimal client for trying the gateway: connect (ws:// or
//! wss://), authenticate with the auth frame (the token from `--token`,
//! `WSGATE_TOKEN` or `--token-file`), optionally subscribe, print every
//! frame as one JSON line. It tracks each durable room's position, resumes
//! from `--since`, and prints on exit the `--since` flags that resume where
//! it stopped. A refused upgrade prints the gateway's reason.

use std::collections::BTreeMap;
use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{TailArgs, secret_from};
use crate::client_tls;

pub fn run(args: &TailArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wsgate tail: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tail(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsgate tail: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `ROOM=OFFSET:EPOCH` → (room, `{"offset":..,"epoch":..}`).
pub fn parse_since_flag(flag: &str) -> Result<(String, Value), String> {
    let bad = || format!("--since '{flag}': expected ROOM=OFFSET:EPOCH, e.g. user:42=17:1764432000123456");
    let (room, position) = flag.rsplit_once('=').ok_or_else(bad)?;
    let (offset, epoch) = position.split_once(':').ok_or_else(bad)?;
    let offset: u64 = offset.parse().map_err(|_| bad())?;
    if room.is_empty() || epoch.is_empty() {
        return Err(bad());
    }
    Ok((room.to_string(), json!({"offset": offset, "epoch": epoch})))
}

async fn tail(args: &TailArgs) -> Result<(), String> {
    let token = secret_from(args.token.as_deref(), args.token_file.as_deref(), "token")
        .map_err(|e| format!("{e} (--token, WSGATE_TOKEN or --token-file)"))?;
    let mut since: BTreeMap<String, Value> = BTreeMap::new();
    for flag in &args.since {
        let (room, position) = parse_since_flag(flag)?;
        since.insert(room, position);
    }
    let request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("--url '{}': {e}", args.url))?;
    let host = request.uri().host().unwrap_or_default().to_string();
    let secure = request.uri().scheme_str() == Some("wss");
    let port = request.uri().port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.url))?;
    let _ = tcp.set_nodelay(true);
    if secure {
        let config = client_tls::client_config(args.ca_file.as_deref())?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| format!("--url '{}': {e}", args.url))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", args.url))?;
        session(args, request, stream, &token, since).await
    } else {
        session(args, request, tcp, &token, since).await
    }
}

async fn session<S>(
    args: &TailArgs,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    token: &str,
    since: BTreeMap<String, Value>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws: WebSocketStream<S> = match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            return Err(refusal(response.status().as_u16(), response.body().as_deref()));
        }
        Err(e) => return Err(format!("cannot connect to {}: {e}", args.url)),
    };
    // The auth frame keeps the token out of the URL and carries the positions.
    let auth = json!({"type": "auth", "token": token, "since": &since});
    ws.send(Message::text(auth.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    for (i, room) in args.subscribe.iter().enumerate() {
        let mut frame = json!({"type": "subscribe", "room": room, "ref": format!("tail-{i}")});
        if let Some(position) = since.get(room) {
            frame["since"] = position.clone();
        }
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut positions: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let ended = loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    println!("{text}");
                    if let Ok(frame) = serde_json::from_str::<Value>(&text) {
                        track(&mut positions, &frame, &args.subscribe);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        eprintln!("closed: {} {}", u16::from(frame.code), frame.reason);
                    }
                    break Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e.to_string()),
                None => break Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
    };
    if !positions.is_empty() {
        let flags: Vec<String> = positions
            .iter()
            .map(|(room, (offset, epoch))| format!("--since {room}={offset}:{epoch}"))
            .collect();
        eprintln!("resume with: {}", flags.join(" "));
    }
    ended
}

/// The gateway's answer to a refused upgrade: its status and the reason in
/// its JSON error body.
fn refusal(status: u16, body: Option<&[u8]>) -> String {
    let reason = body
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .or_else(|| body.map(|b| String::from_utf8_lossy(b).into_owned()))
        .unwrap_or_default();
    format!("refused: HTTP {status}: {reason}")
}

/// Follow every durable room's position: the welcome's and the subscribe
/// acks' (ref `tail-<i>` is `subscribed[i]`), then each event's offset.
fn track(positions: &mut BTreeMap<String, (u64, String)>, frame: &Value, subscribed: &[String]) {
    let mut note = |room: &str, position: &Value| {
        if let (Some(offset), Some(epoch)) = (position["offset"].as_u64(), position["epoch"].as_str()) {
            positions.insert(room.to_string(), (offset, epoch.to_string()));
        }
    };
    match frame["type"].as_str() {
        Some("welcome") => {
            if let Some(map) = frame["positions"].as_object() {
                for (room, position) in map {
                    note(room, position);
                }
            }
        }
        Some("event") => {
            if let Some(room) = frame["room"].as_str() {
                note(room, frame);
            }
        }
        Some("ack") => {
            let room = frame["ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("tail-"))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| subscribed.get(i));
            if let Some(room) = room {
                note(room, &frame["position"]);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_flags_parse() {
        assert_eq!(
            parse_since_flag("user:42=17:abc").unwrap(),
            ("user:42".to_string(), json!({"offset":17,"epoch":"abc"}))
        );
        assert_eq!(parse_since_flag("doc:a=b=3:e").unwrap().0, "doc:a=b");
        for bad in ["user:42", "user:42=x:e", "user:42=3", "=3:e", "user:42=3:"] {
            assert!(parse_since_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_follow_the_welcome_and_events() {
        let mut positions = BTreeMap::new();
        let subscribed = ["orders:9".to_string()];
        for frame in [
            json!({"type":"welcome","positions":{"user:1":{"offset":3,"epoch":"e"}}}),
            json!({"type":"event","room":"user:1","event":"x","offset":4,"epoch":"e"}),
            json!({"type":"event","room":"org:1","event":"x"}),
            json!({"type":"ack","ref":"tail-0","position":{"offset":8,"epoch":"f"}}),
        ] {
            track(&mut positions, &frame, &subscribed);
        }
        assert_eq!(positions.len(), 2);
        assert_eq!(positions["user:1"], (4, "e".to_string()));
        assert_eq!(positions["orders:9"], (8, "f".to_string()));
    }
}

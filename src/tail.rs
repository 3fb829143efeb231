//! `wsgate tail`: a minimal client for trying the gateway: connect with a
//! token, optionally subscribe, print every frame as one JSON line.

use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::cli::TailArgs;

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

async fn tail(args: &TailArgs) -> Result<(), String> {
    let mut request = args.url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", args.token.trim())).map_err(|e| e.to_string())?;
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.url))?;
    for (i, room) in args.subscribe.iter().enumerate() {
        let frame = serde_json::json!({"type": "subscribe", "room": room, "ref": format!("tail-{i}")});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    while let Some(message) = ws.next().await {
        match message.map_err(|e| e.to_string())? {
            Message::Text(text) => println!("{text}"),
            Message::Close(frame) => {
                if let Some(frame) = frame {
                    eprintln!("closed: {} {}", u16::from(frame.code), frame.reason);
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

//! `wsgate publish ROOM EVENT [DATA]`: one event through the server API
//! (`POST /api/v1/publish`), over http:// or https://. Prints the API's
//! answer; a refusal exits 1 with the API's reason.

use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{PublishArgs, secret_from};
use crate::client_tls;

/// The longest an answer may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub fn run(args: &PublishArgs) -> ExitCode {
    let request = match request_body(args) {
        Ok(body) => body,
        Err(error) => {
            eprintln!("wsgate publish: {error}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wsgate publish: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { tokio::time::timeout(TIMEOUT, publish(args, request)).await }) {
        Ok(Ok(answer)) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("wsgate publish: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("wsgate publish: no answer within {} s", TIMEOUT.as_secs());
            ExitCode::FAILURE
        }
    }
}

/// The key and the body, or what is wrong with the arguments.
fn request_body(args: &PublishArgs) -> Result<(String, Value), String> {
    let key = secret_from(args.api_key.as_deref(), args.api_key_file.as_deref(), "API key")
        .map_err(|e| format!("{e} (--api-key, WSGATE_API_KEY or --api-key-file)"))?;
    let data: Value = match &args.data {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| format!("DATA must be JSON, e.g. '{{\"id\":7}}' or '\"text\"': {e}"))?,
    };
    let mut body = json!({"rooms": [args.room], "event": args.event, "data": data});
    if let Some(id) = &args.id {
        body["id"] = json!(id);
    }
    Ok((key, body))
}

async fn publish(args: &PublishArgs, (key, body): (String, Value)) -> Result<String, String> {
    let url = format!("{}/api/v1/publish", args.url.trim_end_matches('/'));
    // hyper-rustls sets ALPN itself (and refuses a config that has it).
    let tls = client_tls::client_config(args.ca_file.as_deref())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::post(url.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("{url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let answer = Limited::new(response.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&answer).into_owned();
    if status.is_success() {
        return Ok(text);
    }
    let reason = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or(text);
    Err(format!("refused: HTTP {status}: {reason}"))
}

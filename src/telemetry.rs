//! Logging: tracing as text or JSON, filtered by `WSGATE_LOG`.
//!
//! The WebSocket libraries log raw frames at trace level, and a frame can hold
//! a token (`auth`, `refresh`): they are capped at `info` whatever the filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Directives appended to every filter so no frame contents are logged.
const QUIET: &[&str] = &["tungstenite=info", "tokio_tungstenite=info", "hyper=info"];

pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let mut env_filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter '{filter}': {e}"))?;
    for directive in QUIET {
        if let Ok(directive) = directive.parse() {
            env_filter = env_filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        // Colour codes only for a person at a terminal, never into a file or a collector.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        // The current span once, not again in a list of every span.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

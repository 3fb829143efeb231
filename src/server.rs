//! The listeners (public, and internal when configured): accept TCP
//! connections, serve HTTP/1.1 on each (with upgrades), and run the node
//! until a signal drains it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};

use crate::close::CloseReason;
use crate::config::LogFormat;
use crate::gateway::Gateway;
use crate::http::{self, Surface};
use crate::tls::TlsAcceptor;

/// After the drain window, how long sessions get to finish their close.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Pending connections the kernel may queue before accept. std's default
/// (128) overflows in a reconnect storm (every client of a drained node at
/// once) and costs the overflowing clients a 1-3 s SYN retransmit. The kernel
/// caps it at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 4096;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accept connections until the process ends. Errors are logged and the
/// loop goes on.
pub async fn accept_loop(gw: Arc<Gateway>, listener: TcpListener, tls: Option<TlsAcceptor>, surface: Surface) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Small frames must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(gw, stream, remote, surface).await,
                Some(tls) => match tls.accept(stream, gw.config.ws.handshake_timeout_s).await {
                    Ok(stream) => serve_connection(gw, stream, remote, surface).await,
                    Err(error) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                },
            }
        });
    }
}

async fn serve_connection<S>(gw: Arc<Gateway>, stream: S, remote: SocketAddr, surface: Surface)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake_timeout = Duration::from_secs(gw.config.ws.handshake_timeout_s);
    let service = service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, Infallible>(http::route(gw, req, remote, surface).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%remote, %error, "http connection ended with an error");
    }
}

/// Bind, serve, and on SIGTERM/SIGINT drain: `/ready` 503 at once, no new
/// sockets, every socket closed with 1012 spread over `drain_s`, then the
/// broker closed.
pub async fn run(gw: Arc<Gateway>) -> Result<(), String> {
    let addr = gw.config.listen_addr().map_err(|e| e.to_string())?;
    let listener = bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match (&gw.config.tls.cert_file, &gw.config.tls.key_file) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from_files(cert, key)?),
        _ => None,
    };
    let internal = match gw.config.internal_listen_addr().map_err(|e| e.to_string())? {
        Some(addr) => Some(bind(addr).map_err(|e| format!("cannot listen on {addr} (internal_listen): {e}"))?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        addr = %local,
        node_id = gw.hub.node_id(),
        broker = gw.broker().kind(),
        dev = gw.config.is_dev(),
        "wsgate listening"
    );
    announce(&gw, "wsgate listening on", "addr", &format!("{scheme}://{local}"));
    let public_surface = match internal {
        Some(internal) => {
            let addr = internal.local_addr().map_err(|e| e.to_string())?;
            announce(
                &gw,
                "wsgate internal API and metrics on",
                "internal_addr",
                &format!("http://{addr}"),
            );
            tokio::spawn(accept_loop(gw.clone(), internal, None, Surface::Internal));
            Surface::Public
        }
        None => Surface::All,
    };
    if gw.handshake_limiter.is_some() {
        tokio::spawn(sweep_handshake_limiter(gw.clone()));
    }
    tokio::spawn(accept_loop(gw.clone(), listener, tls, public_surface));

    crate::shutdown::signal().await;
    let drain = Duration::from_secs(gw.config.shutdown.drain_s);
    tracing::info!(
        connections = gw.hub.connection_count(),
        drain_s = drain.as_secs(),
        "draining: closing every socket with 1012"
    );
    gw.shutdown.begin();
    close_spread_over(&gw, drain).await;
    if !gw.shutdown.wait(DRAIN_GRACE).await {
        tracing::warn!(
            left = gw.hub.connection_count(),
            "sockets still open after the drain grace"
        );
    }
    // The last leaves, so other nodes do not list this one's users until
    // their entries expire.
    if tokio::time::timeout(Duration::from_secs(1), gw.presence.flush())
        .await
        .is_err()
    {
        tracing::warn!("presence: last update not written in time; the entries expire within presence.ttl_s");
    }
    gw.broker().close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A stable line on stdout naming a listener's address, for scripts and tests
/// that start the node on port 0; in JSON mode a JSON line, since collectors
/// parse every line.
fn announce(gw: &Gateway, what: &str, key: &str, url: &str) {
    let line = format!("{what} {url}");
    match gw.config.log_format {
        LogFormat::Text => println!("{line}"),
        LogFormat::Json => {
            let mut object = serde_json::json!({"level": "INFO", "message": line});
            object[key] = url.into();
            println!("{object}");
        }
    }
}

/// Forget idle per-IP buckets now and then, so the map stays small.
async fn sweep_handshake_limiter(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        if let Some(limiter) = &gw.handshake_limiter {
            limiter.sweep(std::time::Instant::now());
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Restart on the same port while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Close every socket with 1012 (reconnect elsewhere), one at a time at
/// evenly spread moments over `window`, in random order, so the clients do
/// not all reconnect to the other nodes at once. Sockets that registered
/// meanwhile are closed at the end of the window.
async fn close_spread_over(gw: &Gateway, window: Duration) {
    let mut connections = gw.hub.connections();
    fastrand::shuffle(&mut connections);
    let start = tokio::time::Instant::now();
    let count = connections.len().max(1) as f64;
    for (i, conn) in connections.iter().enumerate() {
        tokio::time::sleep_until(start + window.mul_f64(i as f64 / count)).await;
        conn.close(CloseReason::Draining);
    }
    tokio::time::sleep_until(start + window).await;
    gw.hub.close_all(CloseReason::Draining);
}

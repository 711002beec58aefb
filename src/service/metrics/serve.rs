//! The daemon's HTTP listener, a few connections at most: `GET /metrics` for Prometheus,
//! `/readyz` and `/healthz` for load balancers, orchestrators and humans.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::Probes;
use crate::service::shutdown::Shutdown;

/// Binds the metrics address; the error says which address failed and why.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics.listen {addr}: {e}"))
}

/// At most this many metrics connections at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may wait for a request's headers.
const CONNECTION_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one connection may live, keep-alive included (Prometheus reconnects).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `probes` on `listener` until `stop` is triggered.
pub(crate) async fn serve(listener: TcpListener, probes: Probes, stop: Shutdown) {
    let probes = Arc::new(probes);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Some(accepted) = stop.until(listener.accept()).await else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // A few scrapers at most are expected: beyond that, a connection is closed at once,
        // so nobody can use up the file descriptors the engine connections need.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "metrics: too many connections; closing this one");
            continue;
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let probes = probes.clone();
                async move { Ok::<_, Infallible>(respond(&probes, &request)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // A client that sends no request, or keeps an idle connection, is dropped; a busy
            // one is closed after its current response once the lifetime is up, so the slots
            // turn over.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(CONNECTION_IDLE)
                .serve_connection(io, service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn respond(probes: &Probes, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            prometheus::TEXT_FORMAT,
            probes.metrics.encode(),
        ),
        (&hyper::Method::GET, "/healthz") => {
            let (status, body) = healthz(probes);
            (status, TEXT, body)
        }
        (&hyper::Method::GET, "/readyz") => {
            let (status, body) = readyz(probes);
            (status, TEXT, body)
        }
        (&hyper::Method::GET, "/") => (
            StatusCode::OK,
            TEXT,
            "stowage: /metrics, /readyz, /healthz\n".to_owned(),
        ),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: stowage serves /metrics, /readyz and /healthz\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// 200 while every loop moves; 503 naming each stuck loop.
fn healthz(probes: &Probes) -> (StatusCode, String) {
    let stuck = probes.health.stuck();
    if stuck.is_empty() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    let lines: String = stuck.iter().map(|s| format!("{s}\n")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, lines)
}

/// 200 once systemd was told READY, else 503; the body is the status line systemd has.
fn readyz(probes: &Probes) -> (StatusCode, String) {
    let status = if probes.notifier.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", probes.notifier.last_status()))
}

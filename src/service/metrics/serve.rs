//! The daemon's HTTP listener, a few connections at most: `GET /metrics` for Prometheus,
//! `/readyz` and `/healthz` for load balancers, orchestrators and humans.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
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

/// What moving the endpoint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Moved {
    /// The address is the one already served (or still none).
    Unchanged,
    /// Now served on `to` (`None`: no longer served); `from` is closed.
    To {
        from: Option<SocketAddr>,
        to: Option<SocketAddr>,
    },
}

/// The new address would not bind: the old listener serves on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}; {}", match .kept {
    Some(addr) => format!("the metrics endpoint stays on {addr}"),
    None => "the metrics endpoint stays off".to_owned(),
})]
pub(crate) struct NotMoved {
    why: String,
    kept: Option<SocketAddr>,
}

/// A request to serve on another address, and where its answer goes.
type Move = (Option<SocketAddr>, oneshot::Sender<Result<Moved, NotMoved>>);

/// The handle a reload moves the endpoint with.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    moves: mpsc::Sender<Move>,
}

impl Endpoint {
    /// Serves on `to` from now on: the new address is bound first, then the old one closed.
    /// A bind that fails keeps the old listener, and says why.
    pub(crate) async fn move_to(&self, to: Option<SocketAddr>) -> Result<Moved, NotMoved> {
        let (answer, answered) = oneshot::channel();
        let ended = || NotMoved {
            why: "the metrics endpoint has stopped".to_owned(),
            kept: None,
        };
        self.moves.send((to, answer)).await.map_err(|_| ended())?;
        answered.await.map_err(|_| ended())?
    }
}

/// A listener and the address the config gave for it (which may say port 0).
pub(crate) type Served = (SocketAddr, TcpListener);

/// The endpoint's task and the handle that moves it: serves `probes` on `listener` (if any)
/// until `stop` is triggered.
pub(crate) fn serve(
    listener: Option<Served>,
    probes: Probes,
    stop: Shutdown,
) -> (Endpoint, impl Future<Output = ()>) {
    let (moves, requests) = mpsc::channel(1);
    (Endpoint { moves }, run(listener, requests, probes, stop))
}

async fn run(
    mut listener: Option<Served>,
    mut moves: mpsc::Receiver<Move>,
    probes: Probes,
    stop: Shutdown,
) {
    let probes = Arc::new(probes);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.triggered() => return,
            Some((to, answer)) = moves.recv() => {
                let _ = answer.send(relocate(&mut listener, to).await);
                continue;
            }
            accepted = accept(listener.as_ref()) => accepted,
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
        tokio::spawn(connection(stream, peer, probes.clone(), permit));
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&Served>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some((_, listener)) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Binds `to`, then drops the old listener (closing it); connections already accepted finish.
async fn relocate(
    listener: &mut Option<Served>,
    to: Option<SocketAddr>,
) -> Result<Moved, NotMoved> {
    let from = listener.as_ref().map(|(addr, _)| *addr);
    if from == to {
        return Ok(Moved::Unchanged);
    }
    *listener = match to {
        Some(addr) => {
            let bound = bind(addr)
                .await
                .map_err(|why| NotMoved { why, kept: from })?;
            Some((addr, bound))
        }
        None => None,
    };
    Ok(Moved::To { from, to })
}

/// Serves one connection, holding its slot until it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    probes: Arc<Probes>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let probes = probes.clone();
        async move { Ok::<_, Infallible>(respond(&probes, &request)) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    // A client that sends no request, or keeps an idle connection, is dropped; a busy one is
    // closed after its current response once the lifetime is up, so the slots turn over.
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

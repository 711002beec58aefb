//! A unix-socket transport for bollard that keeps its connections.
//!
//! bollard 0.21's `connect_with_unix` builds its hyper client with
//! `pool_max_idle_per_host(0)`: every request opens a new socket connection and closes it
//! afterwards (bollard #387, #390; still so in its unreleased 0.22). Measured on a prune of 501
//! images, that was 1,509 connects for 1,509 requests. The engine answers keep-alive requests,
//! so this transport is the same hyper client with its pool on, handed to bollard through its
//! public `connect_with_custom_transport`.

use std::path::Path;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;

/// bollard's own default for one request, in seconds.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How long an idle connection is kept. Long enough to span a pass (a prune's removals, a
/// pull's polls), short enough that a daemon asleep between passes holds no socket open.
const IDLE: Duration = Duration::from_secs(30);

/// A client of the engine listening on the unix socket at `path` (with or without `unix://`).
/// Fails with `SocketNotFoundError` while the socket does not exist, as bollard's own does, so
/// callers can wait for the engine to start.
pub(super) fn connect_unix(path: &str) -> Result<Docker, BollardError> {
    let path = path.strip_prefix("unix://").unwrap_or(path);
    if !Path::new(path).exists() {
        return Err(BollardError::SocketNotFoundError(path.to_owned()));
    }
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE)
        .pool_timer(TokioTimer::new())
        // A pooled connection the engine closed (a restart) is dropped before reuse; a request
        // that was not yet written to it is sent again on a new one (hyper's default, kept).
        .retry_canceled_requests(true)
        .build(UnixConnector);
    let transport = move |request: BollardRequest| {
        let client = client.clone();
        async move { client.request(request).await.map_err(BollardError::from) }
    };
    // The URI's host is the socket path, hex-encoded, which is how `UnixConnector` finds it.
    let uri: hyper::Uri = hyperlocal::Uri::new(path, "/").into();
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    Docker::connect_with_custom_transport(
        transport,
        Some(format!("unix://{authority}")),
        REQUEST_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )
}

//! The engine's unix socket: one pooled HTTP client, shared by bollard and by the few requests
//! stowage reads itself, with the API version in every path.
//!
//! Connections: bollard 0.21's `connect_with_unix` builds its hyper client with
//! `pool_max_idle_per_host(0)`: every request opens a new socket connection and closes it
//! afterwards (bollard #387, #390; still so in its unreleased 0.22). Measured on a prune of 501
//! images, that was 1,509 connects for 1,509 requests. The engine answers keep-alive requests,
//! so this transport is the same hyper client with its pool on, handed to bollard through its
//! public `connect_with_custom_transport`.
//!
//! Version: bollard 0.21.1 never puts the API version in the path (bollard #736), and an
//! unversioned request is answered in the engine's newest schema, whatever bollard's structs
//! know. So the transport names the version itself, once [`Socket::speak`] has chosen it: the
//! newest stowage is tested against, within what the engine serves (see [`chosen_version`]).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;

/// bollard's own default for one request, in seconds.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How long an idle connection is kept. Long enough to span a pass (a prune's removals, a
/// pull's polls), short enough that a daemon asleep between passes holds no socket open.
const IDLE: Duration = Duration::from_secs(30);

/// The newest API version stowage is tested against (Docker 28.5). A newer engine is asked
/// for this one, which it still serves: Docker 29.2's API 1.53 adds an image `Identity` that
/// bollard reads with closed enums, and 1.52 drops event fields.
const TESTED_API: (u32, u32) = (1, 51);

/// The body bollard's requests carry (its type is not exported; its requests are).
type Body = <BollardRequest as HasBody>::Body;
trait HasBody {
    type Body;
}
impl<B> HasBody for hyper::Request<B> {
    type Body = B;
}

/// The engine's unix socket, for bollard and for stowage's own requests.
#[derive(Clone)]
pub(super) struct Socket {
    client: Client<UnixConnector, Body>,
    /// The socket's path.
    path: String,
    /// `/v1.NN`, once chosen: put before every path that names no version.
    version: Arc<OnceLock<String>>,
}

/// What a request of stowage's own got: the status and the whole body.
pub(super) struct Answer {
    pub(super) status: hyper::StatusCode,
    pub(super) body: Bytes,
}

impl Socket {
    /// The socket at `path` (with or without `unix://`). Fails with `SocketNotFoundError`
    /// while it does not exist, as bollard's own does, so callers can wait for the engine.
    pub(super) fn at(path: &str) -> Result<Socket, BollardError> {
        let path = path.strip_prefix("unix://").unwrap_or(path);
        if !Path::new(path).exists() {
            return Err(BollardError::SocketNotFoundError(path.to_owned()));
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_timer(TokioTimer::new())
            // A pooled connection the engine closed (a restart) is dropped before reuse; a
            // request that was not yet written to it is sent again on a new one (hyper's
            // default, kept).
            .retry_canceled_requests(true)
            .build(UnixConnector);
        Ok(Socket {
            client,
            path: path.to_owned(),
            version: Arc::default(),
        })
    }

    /// The socket's path.
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// A bollard client whose requests go through this socket's pool, versioned.
    pub(super) fn docker(&self) -> Result<Docker, BollardError> {
        let socket = self.clone();
        let transport = move |request: BollardRequest| {
            let socket = socket.clone();
            async move { socket.send(request).await }
        };
        // The URI's host is the socket path, hex-encoded, which is how `UnixConnector` finds it.
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.path, "/").into();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        Docker::connect_with_custom_transport(
            transport,
            Some(format!("unix://{authority}")),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
    }

    /// From now on, asks for the version [`chosen_version`] picks between the engine's newest
    /// (`max`) and oldest (`min`) API versions; `None` when `max` cannot be read (requests
    /// then stay unversioned, as bollard sends them).
    pub(super) fn speak(&self, max: &str, min: Option<&str>) -> Option<String> {
        let (major, minor) = chosen_version(max, min)?;
        let chosen = format!("{major}.{minor}");
        let _ = self.version.set(format!("/v{chosen}"));
        Some(chosen)
    }

    /// `GET path` (a path and query), its JSON answer read as `T`: `None` for a 404, an error
    /// naming the status and the engine's words for any other failure.
    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, String> {
        let answer = self.ask(hyper::Method::GET, path).await?;
        if answer.status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            let body = String::from_utf8_lossy(&answer.body);
            return Err(format!("{}: {}", answer.status, body.trim()));
        }
        serde_json::from_slice(&answer.body)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// `DELETE path` (a path and query), its answer read whole.
    pub(super) async fn delete(&self, path: &str) -> Result<Answer, String> {
        self.ask(hyper::Method::DELETE, path).await
    }

    async fn ask(&self, method: hyper::Method, path: &str) -> Result<Answer, String> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.path, path).into();
        let request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .body(bollard::body_full(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.send(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.into_body().collect().await;
            let body = body.map_err(|e| e.to_string())?.to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS), exchange)
            .await
            .map_err(|_| format!("no answer within {REQUEST_TIMEOUT_SECS} s"))?
    }

    /// Sends `request`, its path versioned when a version was chosen and it names none.
    async fn send(
        &self,
        mut request: BollardRequest,
    ) -> Result<hyper::Response<hyper::body::Incoming>, BollardError> {
        if let Some(prefix) = self.version.get()
            && let Some(uri) = versioned(request.uri(), prefix)
        {
            *request.uri_mut() = uri;
        }
        self.client
            .request(request)
            .await
            .map_err(BollardError::from)
    }
}

/// `uri` with `prefix` (`/v1.51`) before its path, unless the path names a version already
/// (`/v1.41/...`, Podman's `/v4.0.0/libpod/...`).
fn versioned(uri: &hyper::Uri, prefix: &str) -> Option<hyper::Uri> {
    let path = uri.path_and_query()?.as_str();
    let named = path
        .strip_prefix("/v")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    if named {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(format!("{prefix}{path}").parse().ok()?);
    hyper::Uri::from_parts(parts).ok()
}

/// The API version to ask an engine for, from its newest (`max`, `/version`'s `ApiVersion`)
/// and oldest (`MinAPIVersion`): [`TESTED_API`] when the engine is newer, else its own newest,
/// and never below its oldest (a future engine that no longer serves the tested one). `None`
/// when `max` is not `MAJOR.MINOR`.
pub(super) fn chosen_version(max: &str, min: Option<&str>) -> Option<(u32, u32)> {
    let newest = api_version(max)?;
    let chosen = newest.min(TESTED_API);
    Some(match min.and_then(api_version) {
        Some(oldest) if oldest > chosen => oldest.min(newest),
        _ => chosen,
    })
}

/// An API version as the engine writes it (`1.51`), as numbers to compare.
pub(super) fn api_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tested_version_is_asked_for_within_what_the_engine_serves() {
        // Docker 20.10, 26.1, 28.5; Podman 4.3 and 5.4 (1.41), 5.8 (1.44): their own.
        assert_eq!(chosen_version("1.41", Some("1.12")), Some((1, 41)));
        assert_eq!(chosen_version("1.45", Some("1.24")), Some((1, 45)));
        assert_eq!(chosen_version("1.51", Some("1.24")), Some((1, 51)));
        assert_eq!(chosen_version("1.44", None), Some((1, 44)));
        // Docker 29.0 (1.52, oldest 1.44) and 29.7 (1.55, oldest 1.40): the tested one.
        assert_eq!(chosen_version("1.52", Some("1.44")), Some((1, 51)));
        assert_eq!(chosen_version("1.55", Some("1.40")), Some((1, 51)));
        // An engine that no longer serves it: its oldest.
        assert_eq!(chosen_version("1.60", Some("1.54")), Some((1, 54)));
        // Minor versions compare as numbers, not text.
        assert_eq!(chosen_version("1.9", None), Some((1, 9)));
        assert_eq!(chosen_version("2.0", Some("1.100")), Some((1, 100)));
        assert_eq!(chosen_version("", None), None);
        assert_eq!(chosen_version("1.x", None), None);
        assert_eq!(chosen_version("1.41", Some("junk")), Some((1, 41)));
    }

    #[test]
    fn a_path_gets_the_version_unless_it_names_one() {
        let uri = |p: &str| -> hyper::Uri { hyperlocal::Uri::new("/run/e.sock", p).into() };
        let path = |u: Option<hyper::Uri>| u.map(|u| u.path_and_query().unwrap().to_string());
        assert_eq!(
            path(versioned(&uri("/images/json?all=false"), "/v1.51")),
            Some("/v1.51/images/json?all=false".into())
        );
        assert_eq!(versioned(&uri("/v1.41/images/json"), "/v1.51"), None);
        assert_eq!(
            versioned(&uri("/v4.0.0/libpod/images/remove"), "/v1.51"),
            None
        );
        // A path that only starts with "v": versioned.
        assert_eq!(
            path(versioned(&uri("/volumes"), "/v1.51")),
            Some("/v1.51/volumes".into())
        );
    }
}

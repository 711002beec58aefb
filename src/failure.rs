//! What went wrong with a pull, in the four words operators need.
//!
//! The engine reports every registry problem as an HTTP status plus free text; a missing login on
//! Docker Hub even reads like "not found". [`classify`] turns that text into a [`FailureClass`]
//! (a pure function, tested against the messages the real engine sends), and [`explain`] says
//! what to do about it.

use std::fmt;

use serde::Serialize;

use crate::reference::ImageRef;

/// The kind of failure, which decides whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The registry refused us: no login, a wrong login, or no access to the repository.
    Auth,
    /// The repository, tag or digest does not exist in the registry.
    NotFound,
    /// The registry could not be reached or did not answer in time.
    Network,
    /// The Docker engine is down, unreachable, or failed on its side.
    Engine,
}

impl FailureClass {
    /// Whether another attempt may succeed. Auth and not-found failures will not fix themselves,
    /// and repeating them only spends the registry's rate limit.
    pub fn is_retryable(self) -> bool {
        matches!(self, FailureClass::Network | FailureClass::Engine)
    }

    /// Short stable label, used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Auth => "auth",
            FailureClass::NotFound => "not-found",
            FailureClass::Network => "network",
            FailureClass::Engine => "engine",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure of one operation on one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What kind of failure it was.
    pub class: FailureClass,
    /// What the engine (or the transport) said, verbatim, for the curious.
    pub detail: String,
    /// Docker Hub answers a missing login with "not found ... may require 'docker login'"; when
    /// the engine said so we mention both possibilities.
    pub maybe_auth: bool,
}

impl Failure {
    /// A failure with a known class and the engine's words.
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let maybe_auth = class == FailureClass::NotFound && mentions_login(&detail);
        Failure {
            class,
            detail,
            maybe_auth,
        }
    }
}

fn mentions_login(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("docker login") || m.contains("pull access denied")
}

/// Classifies a failure reported by the engine's HTTP API.
///
/// `status` is the HTTP status of the engine's answer, when there was one (errors reported in the
/// middle of a pull stream have none). Order matters: a 404 "pull access denied" from Docker Hub
/// is a not-found that may be an auth problem, and "unauthorized" inside a 500 is still auth.
pub fn classify(status: Option<u16>, message: &str) -> FailureClass {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));

    if has(&[
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "incorrect username or password",
        "denied: ",
        "access denied",
        "authorization failed",
    ]) && !has(&["pull access denied"])
    {
        return FailureClass::Auth;
    }
    if status == Some(401) || status == Some(403) {
        return FailureClass::Auth;
    }
    if has(&[
        "manifest unknown",
        "not found",
        "repository does not exist",
        "name unknown",
        "pull access denied",
        "no matching manifest",
    ]) || status == Some(404)
    {
        return FailureClass::NotFound;
    }
    if has(&[
        "dial tcp",
        "connection refused",
        "connection reset",
        "no such host",
        "client.timeout",
        "i/o timeout",
        "tls",
        "timeout",
        "timed out",
        "eof",
        "no route to host",
        "network is unreachable",
        "server misbehaving",
        "service unavailable",
        "bad gateway",
        "toomanyrequests",
        "too many requests",
    ]) {
        return FailureClass::Network;
    }
    FailureClass::Engine
}

/// One sentence (or two) that tells an operator what failed and what to do, with the fully
/// qualified name. Never contains credentials: only the engine's message and our own words.
pub fn explain(image: &ImageRef, failure: &Failure) -> String {
    let registry = image.registry();
    let mut text = match failure.class {
        FailureClass::Auth => format!(
            "auth: registry {registry} refused access to {image}: a login is missing or wrong; \
             run `docker login {registry}` as the daemon's user or point `pull.credentials` at a \
             config.json that has it"
        ),
        FailureClass::NotFound => {
            let mut s = format!("not found: {image} does not exist in registry {registry}");
            if failure.maybe_auth {
                s.push_str(
                    " (or it is private and needs a login: the registry does not say which)",
                );
            }
            s
        }
        FailureClass::Network => format!(
            "network: registry {registry} could not be reached for {image} (it is down, \
             unreachable or too slow)"
        ),
        FailureClass::Engine => format!("engine: the Docker engine failed while pulling {image}"),
    };
    if image.is_docker_hub()
        && matches!(
            failure.class,
            FailureClass::NotFound | FailureClass::Network
        )
    {
        text.push_str(
            "; note that a name without a registry means Docker Hub (docker.io): write the \
             registry host in the name if the image lives elsewhere",
        );
    }
    if !failure.detail.is_empty() {
        text.push_str(" (engine said: ");
        text.push_str(failure.detail.trim());
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Messages below are what Docker 20.10 and distribution 2.8 send on this project's machines.
    #[test]
    fn auth_messages() {
        for (status, msg) in [
            (
                Some(500),
                "Head \"http://127.0.0.1:5102/v2/t/private/manifests/1\": no basic auth credentials",
            ),
            (
                Some(500),
                "Get \"http://127.0.0.1:5102/v2/\": unauthorized: authentication required",
            ),
            (Some(401), "unauthorized"),
            (None, "denied: requested access to the resource is denied"),
        ] {
            assert_eq!(classify(status, msg), FailureClass::Auth, "{msg}");
        }
    }

    #[test]
    fn not_found_messages() {
        for (status, msg) in [
            (
                Some(404),
                "manifest for 127.0.0.1:5101/t/a:9 not found: manifest unknown: manifest unknown",
            ),
            (
                Some(404),
                "pull access denied for nope, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            ),
            (None, "manifest unknown"),
        ] {
            assert_eq!(classify(status, msg), FailureClass::NotFound, "{msg}");
        }
        let hub = Failure::new(
            FailureClass::NotFound,
            "pull access denied for nope, repository does not exist or may require 'docker login'",
        );
        assert!(hub.maybe_auth);
    }

    #[test]
    fn network_messages() {
        for msg in [
            "Get \"http://127.0.0.1:5199/v2/\": dial tcp 127.0.0.1:5199: connect: connection refused",
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
            "Get \"http://x/v2/\": net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
            "read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout",
            "unexpected EOF",
        ] {
            assert_eq!(classify(Some(500), msg), FailureClass::Network, "{msg}");
        }
    }

    #[test]
    fn everything_else_is_the_engine() {
        assert_eq!(
            classify(
                Some(500),
                "failed to register layer: no space left on device"
            ),
            FailureClass::Engine
        );
        assert_eq!(classify(None, ""), FailureClass::Engine);
    }

    #[test]
    fn only_network_and_engine_are_retried() {
        assert!(FailureClass::Network.is_retryable());
        assert!(FailureClass::Engine.is_retryable());
        assert!(!FailureClass::Auth.is_retryable());
        assert!(!FailureClass::NotFound.is_retryable());
    }

    #[test]
    fn explanations_name_the_registry_and_hub() {
        let hub: ImageRef = "nginx".parse().unwrap();
        let text = explain(
            &hub,
            &Failure::new(FailureClass::NotFound, "manifest unknown"),
        );
        assert!(text.starts_with("not found: docker.io/library/nginx:latest"));
        assert!(text.contains("Docker Hub"));
        let private: ImageRef = "127.0.0.1:5102/t/p:1".parse().unwrap();
        let text = explain(
            &private,
            &Failure::new(FailureClass::Auth, "no basic auth credentials"),
        );
        assert!(text.contains("docker login 127.0.0.1:5102"));
        assert!(!text.contains("Docker Hub"));
    }
}

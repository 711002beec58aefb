//! What went wrong with a pull, in the four words operators need.
//!
//! The engine reports every registry problem as an HTTP status plus free text; a missing login on
//! Docker Hub even reads like "not found". [`classify`] turns that text into a [`FailureClass`]
//! (a pure function, tested against the messages the real engine sends), and [`explain`] says
//! what to do about it.

use std::fmt;

use serde::Serialize;

use crate::model::reference::ImageRef;

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
    /// The registry refused because of its rate limit (HTTP 429, `toomanyrequests`): another
    /// attempt before it says so would only spend more of it.
    RateLimited,
    /// The digest does not carry a valid signature by a key its verification policy names: it
    /// is never pinned or pulled, and nothing but a new signature (or policy) changes that.
    Signature,
}

impl FailureClass {
    /// Every class, for series that start at zero.
    pub const ALL: [FailureClass; 6] = [
        FailureClass::Auth,
        FailureClass::NotFound,
        FailureClass::Network,
        FailureClass::Engine,
        FailureClass::RateLimited,
        FailureClass::Signature,
    ];

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
            FailureClass::RateLimited => "rate-limited",
            FailureClass::Signature => "signature",
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
    /// How long the registry asked to be left alone (`Retry-After`), when it said.
    pub retry_after_secs: Option<u64>,
    /// The image exists, but not for the requested platform.
    pub no_platform: bool,
    /// A TLS or HTTP/HTTPS mismatch: a setup problem that retries do not fix.
    pub setup: bool,
    /// The host has no CA certificates at all (the detail says where they were looked for):
    /// a setup problem of the host, not of the engine or the registry.
    pub no_ca_certificates: bool,
    /// The credentials file stowage read for the registry, for an auth failure: the advice
    /// names it, since the login a user made may be in another user's file.
    #[serde(skip)]
    pub credentials: Option<CredentialsFile>,
}

/// The credentials file behind an auth failure, as its advice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsFile {
    /// The file.
    pub path: std::path::PathBuf,
    /// Whether the config names it (`pull.credentials`), or it is the running user's own.
    pub named: bool,
    /// Why it could not be read, when it could not ("it does not exist").
    pub unread: Option<String>,
    /// A command run by hand as root (not a service): it read root's file, while the daemon
    /// reads its own user's.
    pub as_root: bool,
    /// Whether the refused request carried a login from it: the login is wrong (or expired),
    /// rather than missing.
    pub sent: bool,
}

impl fmt::Display for Failure {
    /// The engine's or the registry's words. [`explain`] says what they mean for an image.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A failure with a known class and the engine's words.
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let m = detail.to_ascii_lowercase();
        Failure {
            class,
            maybe_auth: class == FailureClass::NotFound
                && (m.contains("docker login") || m.contains("pull access denied")),
            retry_after_secs: None,
            no_platform: class == FailureClass::NotFound && m.contains("no matching manifest"),
            credentials: None,
            no_ca_certificates: false,
            setup: m.contains("x509:")
                || m.contains("certificate")
                || m.contains("server gave http response to https client"),
            detail,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class.is_retryable() && !self.setup
    }

    /// A request over HTTPS on a host without CA certificates; `detail` says where they were
    /// looked for and what to install.
    pub fn no_ca_certificates(detail: String) -> Self {
        Failure {
            setup: true,
            no_ca_certificates: true,
            ..Failure::new(FailureClass::Network, detail)
        }
    }

    /// This failure, with the credentials file read for it when it is an auth failure.
    pub fn read_credentials_from(mut self, file: impl FnOnce() -> CredentialsFile) -> Self {
        if self.class == FailureClass::Auth {
            self.credentials = Some(file());
        }
        self
    }

    /// This failure, saying how long the registry asked to be left alone.
    pub fn retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after_secs = secs;
        self
    }
}

/// An error's words followed by each of its causes', down to the OS's own ("error sending
/// request for url (...): client error (Connect): tcp connect error: Connection refused (os
/// error 111)"). Libraries' outer messages leave the cause out, and it is what tells a
/// permission from a stopped daemon. A cause an outer message already quotes is not repeated.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let words = next.to_string();
        if !words.is_empty() && !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        cause = next.source();
    }
    text
}

/// The kind of the OS error at the root of `error`, if there is one.
pub(crate) fn io_cause(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cause = Some(error);
    while let Some(next) = cause {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = next.source();
    }
    None
}

/// Classifies a failure of an operation on `image`: the image's own name is removed from the
/// message first, so a repository called `team/unauthorized-page` or `tls-proxy` cannot make a
/// not-found look like an auth or network failure.
pub(crate) fn classify_about(image: &ImageRef, status: Option<u16>, message: &str) -> FailureClass {
    let mut cleaned = message.to_owned();
    for name in [
        image.pull_ref(),
        image.to_string(),
        image.name(),
        image.repository().to_owned(),
    ] {
        cleaned = cleaned.replace(&name, "IMAGE");
    }
    classify(status, &cleaned)
}

/// Classifies a failure reported by the engine's HTTP API.
///
/// `status` is the HTTP status of the engine's answer, when there was one (errors reported in the
/// middle of a pull stream have none). Order matters: a 404 "pull access denied" from Docker Hub
/// is a not-found that may be an auth problem, and "unauthorized" inside a 500 is still auth.
pub(crate) fn classify(status: Option<u16>, message: &str) -> FailureClass {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));

    // First: Docker Hub's message also speaks of "authenticating" to raise the limit.
    if status == Some(429) || has(&["toomanyrequests", "too many requests"]) {
        return FailureClass::RateLimited;
    }
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
        "x509:",
        "certificate",
        "server gave http response to https client",
        "context deadline exceeded",
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
    ]) {
        return FailureClass::Network;
    }
    FailureClass::Engine
}

/// What an auth refusal means and what to do, by the credentials file read: named by the config
/// (a login goes into that file), or the running user's own (a `docker login` as that user), and
/// whether it could be read at all.
fn auth_advice(image: &ImageRef, file: Option<&CredentialsFile>) -> String {
    let registry = image.registry();
    let refused = format!("auth: registry {registry} refused access to {image}");
    let Some(file) = file else {
        return format!(
            "{refused}: a login is missing or wrong; run `docker login {registry}` as the user \
             stowage runs as, or point `pull.credentials` at a config.json that has it"
        );
    };
    let path = file.path.display();
    match (file.named, &file.unread) {
        (true, Some(why)) => format!(
            "{refused}: the credentials file {path} (pull.credentials) was not read: {why}; {}",
            if why.contains("not valid JSON") {
                "fix it (a Docker config.json, as `docker login` writes it)"
            } else {
                "make it readable by the user stowage runs as"
            }
        ),
        (true, None) if file.sent => format!(
            "{refused}: it refused the login for {registry} in {path} (pull.credentials): \
             wrong or expired; put a working one there (`docker --config DIR login {registry}` \
             writes DIR/config.json)"
        ),
        (true, None) => format!(
            "{refused}: {path} (pull.credentials) has no login for {registry}; add one \
             (`docker --config DIR login {registry}` writes DIR/config.json)"
        ),
        // Run by hand as root: the daemon's logins are in its own user's file, not root's.
        (false, unread) if file.as_root => format!(
            "{refused}: {}; for the daemon, run this as the user stowage runs as (on a \
             packaged host: sudo -u stowage -H stowage ...), and log in for it there (sudo -u \
             stowage -H docker login {registry}); for this command, `docker login {registry}`",
            match unread {
                Some(why) => format!(
                    "this command ran as root and read no login: root's file {path} was not \
                     read ({why})"
                ),
                None if file.sent => format!(
                    "this command ran as root, and the registry refused root's login in {path}"
                ),
                None => format!(
                    "this command ran as root, and root's file {path} has no login for \
                     {registry}"
                ),
            }
        ),
        (false, unread) => format!(
            "{refused}: {}; run `docker login {registry}` as the user stowage runs as (on a \
             packaged host: sudo -u stowage -H docker login {registry}), or point \
             `pull.credentials` at a config.json that has it",
            match unread {
                Some(why) => format!("no login was read from {path}, this user's file: {why}"),
                None if file.sent => format!(
                    "it refused the login for {registry} in {path}, this user's file: wrong or \
                     expired"
                ),
                None => format!("{path}, this user's file, has no login for {registry}"),
            }
        ),
    }
}

/// The innermost reason of a network failure, as the OS gave it: what tells a name that does
/// not resolve from a registry that is down. The outer words (`error sending request for url
/// (...)`, `client error (Connect)`) are the client's, and stay in `detail`.
fn network_cause(detail: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    let last = detail.rsplit(": ").next().unwrap_or_default().trim();
    if lower.contains("dns error") || lower.contains("lookup address") {
        format!("its host name does not resolve: {last}")
    } else if last.contains("(os error") {
        last.to_owned()
    } else {
        "it is down, unreachable or too slow".to_owned()
    }
}

/// One sentence (or two) that tells an operator what failed and what to do, with the fully
/// qualified name. Never contains credentials: only the engine's message and our own words.
pub(crate) fn explain(image: &ImageRef, failure: &Failure) -> String {
    let registry = image.registry();
    let mut text = match failure.class {
        FailureClass::Auth => auth_advice(image, failure.credentials.as_ref()),
        FailureClass::NotFound if failure.no_platform => format!(
            "not found: {image} exists in registry {registry}, but not for the requested \
             platform"
        ),
        FailureClass::NotFound => {
            let mut s = format!("not found: {image} does not exist in registry {registry}");
            if failure.maybe_auth {
                s.push_str(&format!(
                    " (or it is private and needs a login, the registry does not say which: \
                     run `docker login {registry}` as the daemon's user or set pull.credentials)"
                ));
            }
            s
        }
        FailureClass::RateLimited => format!(
            "rate-limited: registry {registry} refused {image} because of its rate limit; {}; \
             logged-in pulls have higher limits",
            match failure.retry_after_secs {
                Some(secs) => format!(
                    "nothing is sent to it for {} (its Retry-After)",
                    humantime::format_duration(std::time::Duration::from_secs(secs))
                ),
                None => "not retried in this run".to_owned(),
            }
        ),
        FailureClass::Network if failure.no_ca_certificates => format!(
            "network: cannot talk to registry {registry} for {image}: {}; not retried",
            failure.detail
        ),
        FailureClass::Network if failure.setup => format!(
            "network: cannot talk to registry {registry} for {image}: TLS or HTTP/HTTPS setup \
             (certificates, or a plain-HTTP registry the engine does not list as insecure); \
             not retried"
        ),
        FailureClass::Network => format!(
            "network: registry {registry} could not be reached for {image} ({})",
            network_cause(&failure.detail)
        ),
        FailureClass::Engine => format!("engine: the Docker engine failed while pulling {image}"),
        // The verifier writes the whole sentence: the digest, the keys tried, what it found.
        FailureClass::Signature => format!("signature: {}", failure.detail),
    };
    // The engine's own words are all there is to say about an engine failure. For the other
    // classes the sentence and its advice are the message; the registry client's raw words
    // (`Not authorized: url ...`, `OCI API errors`) go to the JSON and the debug log instead.
    if failure.class == FailureClass::Engine && !failure.detail.is_empty() {
        text.push_str(" (");
        text.push_str(failure.detail.trim());
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as libraries nest them.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_os_reason_is_kept_once() {
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            with_causes(&refused),
            format!("client error (Connect): {}", refused.0)
        );
        assert_eq!(
            io_cause(&refused),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        // An outer message that quotes its cause does not say it twice.
        let quoted = std::io::Error::other("connect: denied");
        assert_eq!(with_causes(&quoted), "connect: denied");
        assert_eq!(io_cause(&Failure::new(FailureClass::Engine, "x")), None);
    }

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
    fn the_image_name_cannot_steer_the_class() {
        let image: ImageRef = "127.0.0.1:5101/team/unauthorized-tls-timeout:1"
            .parse()
            .unwrap();
        let msg = "manifest for 127.0.0.1:5101/team/unauthorized-tls-timeout:1 not found: manifest unknown: manifest unknown";
        assert_eq!(
            classify_about(&image, Some(404), msg),
            FailureClass::NotFound
        );
        assert_eq!(
            classify(Some(500), msg),
            FailureClass::Auth,
            "the naive match is fooled"
        );
    }

    #[test]
    fn setup_and_rate_limits_are_not_retried() {
        let image: ImageRef = "docker.io/library/nginx:1".parse().unwrap();
        for (status, msg) in [
            (
                Some(500),
                "toomanyrequests: You have reached your pull rate limit. You may increase the \
                 limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
            ),
            (
                Some(429),
                "Server error: url http://r/v2/a/manifests/1, code: 429, message: ",
            ),
        ] {
            let class = classify_about(&image, status, msg);
            assert_eq!(class, FailureClass::RateLimited, "{msg}");
            let f = Failure::new(class, msg);
            assert!(!f.is_retryable(), "{msg}");
            assert!(explain(&image, &f).contains("not retried in this run"));
            let f = f.retry_after(Some(90));
            assert!(
                explain(&image, &f).contains("nothing is sent to it for 1m 30s"),
                "{}",
                explain(&image, &f)
            );
        }
        for msg in [
            "Get \"https://r:5000/v2/\": x509: certificate signed by unknown authority",
            "Get \"https://r:5000/v2/\": http: server gave HTTP response to HTTPS client",
        ] {
            let class = classify(Some(500), msg);
            assert_eq!(class, FailureClass::Network, "{msg}");
            assert!(!Failure::new(class, msg).is_retryable(), "{msg}");
        }
        assert!(Failure::new(FailureClass::Network, "dial tcp: connection refused").is_retryable());
        assert_eq!(
            classify(Some(500), "context deadline exceeded"),
            FailureClass::Network
        );
    }

    #[test]
    fn a_missing_platform_is_said_as_such() {
        let image: ImageRef = "r:1/a:1".parse().unwrap();
        let msg = "no matching manifest for linux/arm64/v8 in the manifest list entries";
        let f = Failure::new(classify_about(&image, Some(404), msg), msg);
        assert!(explain(&image, &f).contains("not for the requested platform"));
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
        let private: ImageRef = "127.0.0.1:5102/t/p:1".parse().unwrap();
        let text = explain(
            &private,
            &Failure::new(FailureClass::Auth, "no basic auth credentials"),
        );
        assert!(text.contains("docker login 127.0.0.1:5102"));
        assert!(!text.contains("Docker Hub"));
    }

    #[test]
    fn the_one_line_message_leaves_raw_client_words_out_but_keeps_the_engine_s() {
        let image: ImageRef = "127.0.0.1:5102/t/p:1".parse().unwrap();
        let raw = "Not authorized: url http://127.0.0.1:5102/v2/t/p/manifests/1";
        let text = explain(&image, &Failure::new(FailureClass::Auth, raw));
        assert!(!text.contains("Not authorized"), "{text}");
        assert!(text.ends_with("that has it"), "{text}");
        let text = explain(
            &image,
            &Failure::new(FailureClass::Network, "OCI API errors: [..]"),
        );
        assert!(!text.contains("OCI API errors"), "{text}");
        // An engine failure's own words are the only account of it.
        let text = explain(
            &image,
            &Failure::new(FailureClass::Engine, "no space left on device"),
        );
        assert!(text.ends_with("(no space left on device)"), "{text}");
    }

    #[test]
    fn auth_advice_names_the_credentials_file_read_and_what_to_do_with_it() {
        let image: ImageRef = "r.example/private/app:1".parse().unwrap();
        let advice = |named, unread: Option<&str>, sent| {
            let f = Failure::new(FailureClass::Auth, "unauthorized").read_credentials_from(|| {
                CredentialsFile {
                    path: "/etc/stowage/docker.json".into(),
                    named,
                    unread: unread.map(str::to_owned),
                    as_root: false,
                    sent,
                }
            });
            explain(&image, &f)
        };
        let own = advice(false, None, false);
        assert!(
            own.contains("/etc/stowage/docker.json, this user's file, has no login for r.example")
                && own.contains("sudo -u stowage -H docker login r.example"),
            "{own}"
        );
        let wrong = advice(false, None, true);
        assert!(
            wrong.contains(
                "refused the login for r.example in /etc/stowage/docker.json, this \
                            user's file: wrong or expired"
            ),
            "{wrong}"
        );
        let missing = advice(false, Some("it does not exist"), false);
        assert!(
            missing.contains("no login was read from /etc/stowage/docker.json"),
            "{missing}"
        );
        // A file the config names: a `docker login` as some user would not reach it.
        let named = advice(true, None, false);
        assert!(
            named.contains("(pull.credentials) has no login for r.example")
                && !named.contains("sudo"),
            "{named}"
        );
        let named = advice(true, None, true);
        assert!(
            named.contains(
                "refused the login for r.example in /etc/stowage/docker.json \
                            (pull.credentials): wrong or expired"
            ),
            "{named}"
        );
        let unreadable = advice(true, Some("Permission denied (os error 13)"), false);
        assert!(
            unreadable.contains("was not read: Permission denied") && !unreadable.contains("wrong"),
            "{unreadable}"
        );
        // Run as root, the advice is to run as the daemon's user.
        let f = Failure::new(FailureClass::Auth, "unauthorized").read_credentials_from(|| {
            CredentialsFile {
                path: "/root/.docker/config.json".into(),
                named: false,
                unread: None,
                as_root: true,
                sent: false,
            }
        });
        let root = explain(&image, &f);
        assert!(
            root.contains("ran as root, and root's file /root/.docker/config.json has no login")
                && root.contains("sudo -u stowage -H stowage")
                && root.ends_with("for this command, `docker login r.example`"),
            "{root}"
        );
        // Root's file not there: said so, not "root's logins".
        let f = Failure::new(FailureClass::Auth, "unauthorized").read_credentials_from(|| {
            CredentialsFile {
                path: "/root/.docker/config.json".into(),
                named: false,
                unread: Some("it does not exist".into()),
                as_root: true,
                sent: false,
            }
        });
        let root = explain(&image, &f);
        assert!(
            root.contains(
                "read no login: root's file /root/.docker/config.json was not read (it \
                           does not exist)"
            ),
            "{root}"
        );
        // Only an auth failure carries it.
        let f = Failure::new(FailureClass::Network, "refused")
            .read_credentials_from(|| unreachable!("not asked for a network failure"));
        assert_eq!(f.credentials, None);
    }

    #[test]
    fn a_network_failure_says_its_innermost_cause() {
        let image: ImageRef = "r.example/a:1".parse().unwrap();
        let dns = "error sending request for url (https://r.example/v2/): client error \
                   (Connect): dns error: failed to lookup address information: Name or \
                   service not known";
        let text = explain(&image, &Failure::new(FailureClass::Network, dns));
        assert!(
            text.ends_with("(its host name does not resolve: Name or service not known)"),
            "{text}"
        );
        let refused = "error sending request for url (http://r.example/v2/): client error \
                       (Connect): tcp connect error: Connection refused (os error 111)";
        let text = explain(&image, &Failure::new(FailureClass::Network, refused));
        assert!(
            text.ends_with("(Connection refused (os error 111))"),
            "{text}"
        );
        let text = explain(&image, &Failure::new(FailureClass::Network, "timed out"));
        assert!(
            text.ends_with("(it is down, unreachable or too slow)"),
            "{text}"
        );
    }
}

//! Registry credentials, from a Docker `config.json`.
//!
//! The same file `docker login` writes: `auths`, `credsStore` and `credHelpers` are honoured
//! (through the `docker_credential` crate). The file is read at every lookup, so a login made
//! while the daemon runs takes effect at its next pull. Credentials are never logged: the
//! [`RegistryAuth`] `Debug` output hides them.

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::model::failure::CredentialsFile;
use crate::model::reference::DOCKER_HUB;

/// How long a credential helper may take to answer.
pub(crate) const CREDENTIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The key `docker login` uses for Docker Hub in `config.json`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry they are for, as the engine's auth config names it.
    pub server: String,
    /// User name, for basic auth.
    pub username: Option<String>,
    /// Password, for basic auth.
    pub password: Option<String>,
    /// An identity (refresh) token, for registries that issue one.
    pub identity_token: Option<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why credentials could not be read. Pulls then go on anonymously; the registry's answer says
/// whether that was enough.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read registry credentials for {registry}: {reason}", path.display())]
pub struct CredentialError {
    /// The config file.
    pub path: PathBuf,
    /// The registry asked for.
    pub registry: String,
    /// What went wrong (never the credential itself).
    pub reason: String,
}

/// Where credentials come from.
#[derive(Debug, Clone)]
pub struct CredentialSource {
    /// The `config.json` to read.
    path: PathBuf,
    /// Whether the operator named the file (then a missing file is worth a warning).
    explicit: bool,
}

impl CredentialSource {
    /// The configured file, or else the daemon user's: `$DOCKER_CONFIG/config.json`, then
    /// `$HOME/.docker/config.json`, as the docker CLI does.
    pub fn new(configured: Option<&Path>) -> CredentialSource {
        if let Some(path) = configured {
            return CredentialSource {
                path: path.to_owned(),
                explicit: true,
            };
        }
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        CredentialSource {
            path: dir.join("config.json"),
            explicit: false,
        }
    }

    /// The file credentials are read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, as an auth failure's advice needs it: named by the config or the user's own,
    /// why it cannot be read, when it cannot (one read, only after a refusal), and whether
    /// the refused request carried a login (`sent`).
    pub fn describe(&self, sent: bool) -> CredentialsFile {
        let unread = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .err()
                .map(|e| format!("it is not valid JSON ({e})")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("it does not exist".into()),
            Err(e) => Some(e.to_string()),
        };
        use std::os::unix::fs::MetadataExt;
        CredentialsFile {
            path: self.path.clone(),
            named: self.explicit,
            unread,
            // This process's own entry in /proc belongs to its user; systemd sets
            // INVOCATION_ID for a service (the Podman drop-in runs the daemon as root).
            as_root: std::env::var_os("INVOCATION_ID").is_none()
                && std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
            sent,
        }
    }

    /// [`Self::lookup`] off the async threads, within [`CREDENTIAL_TIMEOUT`]. Whatever goes
    /// wrong (a bad file, a helper that fails or does not answer) is logged with `otherwise`,
    /// what happens instead (say "pulling anonymously"), and counts as no credentials: the
    /// registry's answer then says whether that was enough.
    pub async fn lookup_timed(&self, registry: &str, otherwise: &str) -> Option<RegistryAuth> {
        let source = self.clone();
        let owned = registry.to_owned();
        let lookup = tokio::task::spawn_blocking(move || source.lookup(&owned));
        match tokio::time::timeout(CREDENTIAL_TIMEOUT, lookup).await {
            Ok(Ok(Ok(found))) => found,
            Ok(Ok(Err(e))) => {
                tracing::warn!("{e}; {otherwise}");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    registry,
                    "credential lookup did not complete: {e}; {otherwise}"
                );
                None
            }
            Err(_) => {
                tracing::warn!(
                    registry,
                    "the credential helper did not answer within {}s; {otherwise}",
                    CREDENTIAL_TIMEOUT.as_secs()
                );
                None
            }
        }
    }

    /// Credentials for `registry` (a host with optional port, or `docker.io`). `Ok(None)` means
    /// anonymous: no file (unless the operator named one), or no entry for this registry.
    /// Blocking: a credential helper is a child process.
    pub fn lookup(&self, registry: &str) -> Result<Option<RegistryAuth>, CredentialError> {
        let server = if registry == DOCKER_HUB {
            DOCKER_HUB_AUTH_KEY
        } else {
            registry
        };
        let error = |reason: String| CredentialError {
            path: self.path.clone(),
            registry: registry.to_owned(),
            reason,
        };
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.explicit => {
                return Ok(None);
            }
            Err(e) => return Err(error(e.to_string())),
        };
        match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), server) {
            Ok(DockerCredential::UsernamePassword(user, password)) => Ok(Some(RegistryAuth {
                server: server.to_owned(),
                username: Some(user),
                password: Some(password),
                identity_token: None,
            })),
            Ok(DockerCredential::IdentityToken(token)) => Ok(Some(RegistryAuth {
                server: server.to_owned(),
                username: None,
                password: None,
                identity_token: Some(token),
            })),
            Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
            // Helpers exit non-zero with this text when they simply hold nothing for the
            // registry (docker-credential-helpers' ErrCredentialsNotFound): anonymous, quietly.
            Err(CredentialRetrievalError::HelperFailure { stdout, .. })
                if stdout.contains("credentials not found") =>
            {
                Ok(None)
            }
            // Otherwise the helper's output could hold a secret: say only which helper failed.
            Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
                Err(error(format!("credential helper `{helper}` failed")))
            }
            Err(e) => Err(error(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source_with(json: &str) -> (tempfile::NamedTempFile, CredentialSource) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(json.as_bytes()).unwrap();
        let src = CredentialSource::new(Some(f.path()));
        (f, src)
    }

    #[test]
    fn reads_auths_by_host() {
        // "stowage:stowage-secret"
        let (_f, src) = source_with(
            r#"{"auths":{"127.0.0.1:5102":{"auth":"c3Rvd2FnZTpzdG93YWdlLXNlY3JldA=="}}}"#,
        );
        let auth = src.lookup("127.0.0.1:5102").unwrap().unwrap();
        assert_eq!(auth.username.as_deref(), Some("stowage"));
        assert_eq!(auth.password.as_deref(), Some("stowage-secret"));
        assert_eq!(src.lookup("127.0.0.1:5101").unwrap(), None);
    }

    #[test]
    fn docker_hub_uses_the_legacy_key() {
        let (_f, src) = source_with(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#);
        let auth = src.lookup("docker.io").unwrap().unwrap();
        assert_eq!(auth.username.as_deref(), Some("u"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let (_f, src) = source_with(r#"{"auths":{"r:1":{"auth":"dXNlcjpodW50ZXIy"}}}"#);
        let auth = src.lookup("r:1").unwrap().unwrap();
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("\"user\""),
            "{shown}"
        );
    }

    #[test]
    fn missing_files() {
        let implicit = CredentialSource {
            path: PathBuf::from("/nonexistent/config.json"),
            explicit: false,
        };
        assert_eq!(implicit.lookup("r:1").unwrap(), None);
        let explicit = CredentialSource::new(Some(Path::new("/nonexistent/config.json")));
        let err = explicit.lookup("r:1").unwrap_err().to_string();
        assert!(
            err.starts_with("/nonexistent/config.json: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let (_f, src) = source_with("{not json");
        assert!(src.lookup("r:1").is_err());
    }
}

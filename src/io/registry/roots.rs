//! The system's CA certificates, and what stowage does on a host that has none.
//!
//! reqwest refuses to build a client with its default TLS settings when the system has no CA
//! certificates (a minimal root, a distroless image, a host where `ca-certificates` was never
//! installed), and oci-client cannot be built there at all: its constructor makes a default
//! reqwest client first, which panics. stowage could then not talk even to a plain-HTTP
//! registry on loopback, and the error blamed the engine's insecure-registries setting. Here:
//! - stowage's own requests (`direct.rs`) use a client that trusts nothing over TLS, and serve
//!   plain-HTTP registries (anonymous or with a login) alone, without oci-client;
//! - an HTTPS registry, or an answer only oci-client would handle, fails saying that no CA
//!   certificates were found, where they were looked for, and what to install.

use std::path::PathBuf;

use crate::model::failure::Failure;

/// Bundle files looked for when no `SSL_CERT_FILE` is set, named in the failure when none of
/// them exists (Debian and Ubuntu; Fedora and RHEL).
const USUAL_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// A host without CA certificates: where they were looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NoRoots {
    looked: Vec<PathBuf>,
}

impl NoRoots {
    /// `Some` when the system's CA certificates, as reqwest's verifier loads them
    /// (`SSL_CERT_FILE` and `SSL_CERT_DIR`, else the distribution's bundle and directories),
    /// hold none. Only asked after a client failed to build, so a host with certificates never
    /// reads them twice.
    pub(super) fn probe() -> Option<NoRoots> {
        let loaded = rustls_native_certs::load_native_certs();
        if !loaded.certs.is_empty() {
            return None;
        }
        // Set, these are the only places the verifier reads, whether they exist or not.
        let mut named: Vec<PathBuf> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .into_iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .collect();
        named.dedup();
        if !named.is_empty() {
            return Some(NoRoots { looked: named });
        }
        let probe = openssl_probe::probe();
        let mut looked: Vec<PathBuf> = probe.cert_file.into_iter().collect();
        if looked.is_empty() {
            looked.extend(USUAL_BUNDLES.iter().map(PathBuf::from));
        }
        looked.extend(probe.cert_dir);
        Some(NoRoots { looked })
    }

    /// The failure of any request to `registry` over HTTPS.
    pub(super) fn failure(&self, registry: &str) -> Failure {
        self.failure_because(&format!("registry {registry} is spoken to over HTTPS"))
    }

    /// The failure of a request to plain-HTTP `registry` whose answer only oci-client handles
    /// (a redirect, a token service, an error page), which cannot be built without them.
    pub(super) fn fallback_failure(&self, registry: &str) -> Failure {
        self.failure_because(&format!(
            "registry {registry} gave an answer only the registry client handles, and it \
             cannot start without them"
        ))
    }

    fn failure_because(&self, why: &str) -> Failure {
        let looked: Vec<String> = self
            .looked
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Failure::no_ca_certificates(format!(
            "no CA certificates found at {}; install ca-certificates ({why})",
            looked.join(", ")
        ))
    }
}

/// A reqwest client for plain HTTP only, on a host without CA certificates.
pub(super) fn plain_reqwest(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    builder.tls_certs_only(Vec::new()).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::failure::FailureClass;

    #[test]
    fn a_client_for_plain_http_builds_without_system_roots() {
        let client = plain_reqwest(reqwest::Client::builder());
        assert!(client.is_ok(), "{client:?}");
    }

    #[test]
    fn the_failure_names_where_it_looked_and_what_to_install() {
        let none = NoRoots {
            looked: vec![PathBuf::from("/etc/ssl/certs/ca-certificates.crt")],
        };
        let failure = none.failure("registry.example.com");
        assert_eq!(failure.class, FailureClass::Network);
        assert!(!failure.is_retryable());
        assert_eq!(
            failure.detail,
            "no CA certificates found at /etc/ssl/certs/ca-certificates.crt; install \
             ca-certificates (registry registry.example.com is spoken to over HTTPS)"
        );
    }
}

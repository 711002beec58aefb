//! Registries that answer without credentials, asked directly: one request per question.
//!
//! oci-client asks a registry's `/v2/` endpoint before every request for which it holds no
//! token, and an anonymous registry never hands it one: every HEAD cost a ping and the HEAD
//! (2 requests per image on a warm follow check). Its HEAD also drops the response's media
//! type, so learning whether a tag names an index took one more GET (and ping) per new digest.
//! For a registry stowage has no credentials for, the HEAD (and an index's GET) go out here,
//! plainly: one request, and the media type with it. The first 401 or 403 marks the registry
//! as one that wants credentials, and from then on every request about it goes through
//! oci-client's token handling, as before. So does any answer this path does not expect: the
//! error a user sees is always oci-client's, classified as before.

use std::sync::Mutex;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::{MANIFEST_TYPES, USER_AGENT, is_loopback};
use crate::model::reference::{DOCKER_HUB, ImageRef};
use crate::model::sync::Locked;

/// Media types of manifests that name a single image (no index to read).
const SINGLE_MANIFEST_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
];

/// What a HEAD of a manifest said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    /// `Docker-Content-Digest`.
    pub(super) digest: String,
    /// `Content-Type`, when the registry sent one.
    pub(super) media_type: Option<String>,
}

impl Head {
    /// Whether the manifest is a single image's, so there is no index to read.
    pub(super) fn is_single_manifest(&self) -> bool {
        self.media_type
            .as_deref()
            .is_some_and(|t| SINGLE_MANIFEST_TYPES.contains(&media_type_essence(t)))
    }
}

/// The lowercase hex SHA-256 of `bytes`, as digests write it.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `application/x; charset=...` without its parameters.
fn media_type_essence(t: &str) -> &str {
    t.split(';').next().unwrap_or(t).trim()
}

/// The direct path to registries that need no credentials, and what it learned about each.
pub(super) struct OpenRegistries {
    http: reqwest::Client,
    /// Hosts spoken to over plain HTTP (loopback and `insecure`), as the engine does.
    plain: Vec<String>,
    /// Hosts that asked for credentials: never asked directly again.
    closed: Mutex<Vec<String>>,
}

impl OpenRegistries {
    /// `None` when no HTTP client can be built (no CA certificates): everything then goes
    /// through oci-client, which says why.
    pub(super) fn new(plain: Vec<String>) -> Option<OpenRegistries> {
        let http = reqwest::Client::builder()
            // The engine follows no redirect for a manifest HEAD either; a redirect here
            // means "ask oci-client".
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .ok()?;
        Some(OpenRegistries {
            http,
            plain,
            closed: Mutex::new(Vec::new()),
        })
    }

    /// HEAD of `image`'s manifest (by its digest, else its tag), when the registry answers it
    /// without credentials. `None`: ask oci-client instead.
    pub(super) async fn head(&self, image: &ImageRef) -> Option<Head> {
        let response = self.request(reqwest::Method::HEAD, image).await?;
        let headers = response.headers();
        let digest = headers
            .get("docker-content-digest")?
            .to_str()
            .ok()?
            .to_owned();
        // A registry that serves other content than the digest asked for: oci-client says so.
        if image.digest().is_some_and(|d| d != digest) {
            return None;
        }
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Some(Head { digest, media_type })
    }

    /// The manifest of `image` (`name@digest`), when the registry serves it without
    /// credentials. `None`: ask oci-client instead.
    /// The body must hash to the digest asked for, as oci-client checks: the platform digests
    /// stowage pins are read from it.
    pub(super) async fn get(&self, image: &ImageRef) -> Option<Vec<u8>> {
        let response = self.request(reqwest::Method::GET, image).await?;
        let body = response.bytes().await.ok()?;
        let wanted = image.digest()?.strip_prefix("sha256:")?;
        (sha256_hex(&body) == wanted).then(|| body.to_vec())
    }

    async fn request(
        &self,
        method: reqwest::Method,
        image: &ImageRef,
    ) -> Option<reqwest::Response> {
        let host = image.registry();
        // Docker Hub always wants a token, even for public images.
        if host == DOCKER_HUB || self.closed.locked().iter().any(|h| h == host) {
            return None;
        }
        let scheme = if is_loopback(host) || self.plain.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        let reference = image.digest().or(image.tag()).unwrap_or("latest");
        let url = format!(
            "{scheme}://{host}/v2/{}/manifests/{reference}",
            image.repository()
        );
        let response = self
            .http
            .request(method, url)
            .header(ACCEPT, MANIFEST_TYPES.join(", "))
            .send()
            .await
            .ok()?;
        match response.status() {
            StatusCode::OK => Some(response),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.closed.locked().push(host.to_owned());
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_checked_against_their_digest() {
        // sha256("") as registries write it.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn only_single_image_manifests_skip_the_index_read() {
        let head = |t: Option<&str>| Head {
            digest: "sha256:x".into(),
            media_type: t.map(str::to_owned),
        };
        assert!(head(Some("application/vnd.oci.image.manifest.v1+json")).is_single_manifest());
        assert!(
            head(Some(
                "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"
            ))
            .is_single_manifest()
        );
        assert!(!head(Some("application/vnd.oci.image.index.v1+json")).is_single_manifest());
        assert!(
            !head(Some(
                "application/vnd.docker.distribution.manifest.list.v2+json"
            ))
            .is_single_manifest()
        );
        // Unknown or missing: read it, as before.
        assert!(!head(Some("application/json")).is_single_manifest());
        assert!(!head(None).is_single_manifest());
    }
}

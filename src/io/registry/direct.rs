//! Manifest HEADs and GETs sent by stowage itself: one request per question, and every
//! answer's rate-limit headers read.
//!
//! oci-client asks a registry's `/v2/` endpoint before every request for which it holds no
//! token, and an anonymous registry never hands it one: every HEAD cost a ping and the HEAD
//! (2 requests per image on a warm follow check). Its HEAD also drops the response's media
//! type, so learning whether a tag names an index took one more GET (and ping) per new digest,
//! and it hides the response's headers, where Docker Hub states the pull budget left. So the
//! HEAD (and an index's GET) go out here, with the credentials stowage has: none, a login sent
//! as Basic, or a bearer token. Tokens are still fetched by oci-client (`Client::auth`, which
//! follows the registry's challenge), once per repository, and kept until a 401.
//!
//! A 429 blocks the registry until its `Retry-After` has passed: nothing is sent to it before
//! then. Any other answer this path does not expect goes to oci-client, so the error a user
//! sees is classified as before.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};

use super::roots::{self, NoRoots};
use super::{MANIFEST_TYPES, USER_AGENT};
use crate::model::failure::{Failure, FailureClass, classify_about, with_causes};
use crate::model::plain_http::PlainHttp;
use crate::model::rate_limit::{Budget, budget, retry_after};
use crate::model::reference::{DOCKER_HUB, ImageRef};
use crate::model::sync::Locked;

/// How long a registry that answered 429 without `Retry-After` is left alone.
pub(super) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

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

/// Whether `bytes` hash to `digest` (`sha256:<hex>`).
pub(super) fn matches_digest(bytes: &[u8], digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|w| sha256_hex(bytes) == w)
}

/// `application/x; charset=...` without its parameters.
fn media_type_essence(t: &str) -> &str {
    t.split(';').next().unwrap_or(t).trim()
}

/// What the direct path made of a request: the answer hoped for, or why there is none.
pub(super) type Answer<T> = Result<T, NotDone>;

/// Why the direct path has no answer.
pub(super) enum NotDone {
    /// The registry refused for its rate limit (or is still blocked since it did).
    Refused(Failure),
    /// Anything else: ask oci-client, whose errors users know.
    Fallback,
    /// The registry answered 404. Where absence is an answer (a signature, the referrers
    /// API), it is taken as one; elsewhere it is a [`NotDone::Fallback`].
    Missing,
    /// The body is longer than what is read of it: not read further, and never handed to a
    /// path that reads it whole (a registry that sends without end must not fill memory).
    TooLarge,
}

/// Manifests and indexes are read up to this size: the OCI distribution spec has registries
/// accept manifests up to 4 MiB.
pub(super) const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// At most `limit` bytes of `response`'s body, read as it comes.
async fn capped(mut response: reqwest::Response, limit: u64) -> Answer<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(NotDone::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if (body.len() + chunk.len()) as u64 > limit => {
                return Err(NotDone::TooLarge);
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(_) => return Err(NotDone::Fallback),
        }
    }
}

/// What oci-client needs to fetch a token for a request: the client for the registry, and
/// the reference in its terms.
/// `None` on a host without CA certificates, where there is no oci-client: a registry that
/// wants a token then goes to the fallback, which says why it cannot be asked.
pub(super) type TokenSource<'a> = (Option<&'a oci_client::Client>, &'a Reference);

/// Stowage's own requests to registries, and what it learned of each registry.
pub(super) struct Direct {
    http: reqwest::Client,
    /// Which hosts are spoken to over plain HTTP, as the engine does.
    plain: PlainHttp,
    /// Bearer tokens by registry and repository, as oci-client fetched them.
    tokens: Mutex<BTreeMap<(String, String), String>>,
    /// Registries that challenged for a bearer token: a new repository there gets one first.
    bearer: Mutex<BTreeSet<String>>,
    /// Each registry's budget, as its last answer stated it.
    budgets: Mutex<BTreeMap<String, Budget>>,
    /// Until when each registry asked to be left alone (a 429).
    blocked: Mutex<BTreeMap<String, SystemTime>>,
}

impl Direct {
    /// `None` when no HTTP client can be built at all: everything then goes through
    /// oci-client, which says why. On a host without CA certificates (`no_roots`) the client
    /// speaks plain HTTP only, and HTTPS registries are never asked here.
    pub(super) fn new(plain: PlainHttp, no_roots: Option<&NoRoots>) -> Option<Direct> {
        let builder = reqwest::Client::builder()
            // The engine follows no redirect for a manifest HEAD either; a redirect here
            // means "ask oci-client".
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT);
        let http = match no_roots {
            None => builder.build(),
            Some(_) => roots::plain_reqwest(builder),
        }
        .ok()?;
        Some(Direct {
            http,
            plain,
            tokens: Mutex::new(BTreeMap::new()),
            // Docker Hub always wants a token, even for public images.
            bearer: Mutex::new(BTreeSet::from([DOCKER_HUB.to_owned()])),
            budgets: Mutex::new(BTreeMap::new()),
            blocked: Mutex::new(BTreeMap::new()),
        })
    }

    /// HEAD of `image`'s manifest (by its digest, else its tag).
    pub(super) async fn head(
        &self,
        image: &ImageRef,
        auth: &OciAuth,
        tokens: TokenSource<'_>,
    ) -> Answer<Head> {
        let url = self.url(image);
        let response = self
            .request(reqwest::Method::HEAD, image, url, auth, tokens)
            .await?;
        let headers = response.headers();
        let Some(digest) = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return Err(NotDone::Fallback);
        };
        // A registry that serves other content than the digest asked for: oci-client says so.
        if image.digest().is_some_and(|d| d != digest) {
            return Err(NotDone::Fallback);
        }
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Head { digest, media_type })
    }

    /// The manifest of `image` (`name@digest`). The body must hash to the digest asked for,
    /// as oci-client checks: the platform digests stowage pins are read from it.
    pub(super) async fn get(
        &self,
        image: &ImageRef,
        auth: &OciAuth,
        tokens: TokenSource<'_>,
    ) -> Answer<Vec<u8>> {
        let url = self.url(image);
        let response = self
            .request(reqwest::Method::GET, image, url, auth, tokens)
            .await?;
        let body = capped(response, MAX_MANIFEST).await?;
        // By tag (a signature manifest), the body is whatever the tag names now: the layers
        // it lists are checked against their own digests.
        match image.digest().map(|d| d.strip_prefix("sha256:")) {
            None => Ok(body),
            Some(Some(w)) if sha256_hex(&body) == w => Ok(body),
            Some(_) => Err(NotDone::Fallback),
        }
    }

    /// The referrers of `image` (`name@digest`): the OCI index the referrers API answers.
    /// [`NotDone::Missing`] when the registry has no referrers API (distribution 2.8 and 3.0).
    pub(super) async fn referrers(
        &self,
        image: &ImageRef,
        digest: &str,
        auth: &OciAuth,
        tokens: TokenSource<'_>,
    ) -> Answer<Vec<u8>> {
        let url = format!("{}/referrers/{digest}", self.repository_url(image));
        let response = self
            .request(reqwest::Method::GET, image, url, auth, tokens)
            .await?;
        capped(response, MAX_MANIFEST).await
    }

    /// The blob `digest` of `image`'s repository, at most `limit` bytes ([`NotDone::TooLarge`]
    /// past them), checked against its digest. A redirect (to a storage backend) or anything
    /// else unexpected: ask oci-client.
    pub(super) async fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        limit: u64,
        auth: &OciAuth,
        tokens: TokenSource<'_>,
    ) -> Answer<Vec<u8>> {
        let url = self.blob_url(image, digest);
        let response = self
            .request(reqwest::Method::GET, image, url, auth, tokens)
            .await?;
        let body = capped(response, limit).await?;
        if matches_digest(&body, digest) {
            Ok(body)
        } else {
            Err(NotDone::Fallback)
        }
    }

    /// One request to `url` about `image`'s repository, with a token when the registry wants
    /// one (a 401 with a bearer challenge fetches one and tries once more).
    async fn request(
        &self,
        method: reqwest::Method,
        image: &ImageRef,
        url: String,
        auth: &OciAuth,
        tokens: TokenSource<'_>,
    ) -> Answer<reqwest::Response> {
        let host = image.registry();
        if let Some(f) = self.refusal(host) {
            return Err(NotDone::Refused(f));
        }
        let key = (host.to_owned(), image.repository().to_owned());
        for _ in 0..2 {
            let token = match self.token(&key, auth, tokens).await {
                Some(t) => t,
                None => return Err(NotDone::Fallback),
            };
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, MANIFEST_TYPES.join(", "));
            request = match (&token, auth) {
                (Some(t), _) => request.bearer_auth(t),
                (None, OciAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
                (None, OciAuth::Bearer(t)) => request.bearer_auth(t),
                (None, OciAuth::Anonymous) => request,
            };
            // With no fallback client (a host without CA certificates), this path's words
            // are all there is: its failures are given as they are.
            let alone = tokens.0.is_none();
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if alone => {
                    let failure = Failure::new(FailureClass::Network, with_causes(&e));
                    return Err(NotDone::Refused(failure));
                }
                Err(_) => return Err(NotDone::Fallback),
            };
            self.note_budget(host, response.headers());
            match response.status() {
                StatusCode::OK => return Ok(response),
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, SystemTime::now()));
                    self.block(host, wait.unwrap_or(DEFAULT_RETRY_AFTER));
                    let detail = format!(
                        "{} {}: too many requests",
                        response.status(),
                        response.url()
                    );
                    return Err(NotDone::Refused(
                        Failure::new(FailureClass::RateLimited, detail)
                            .retry_after(Some(wait.unwrap_or(DEFAULT_RETRY_AFTER).as_secs())),
                    ));
                }
                StatusCode::UNAUTHORIZED if is_bearer_challenge(response.headers()) => {
                    self.bearer.locked().insert(host.to_owned());
                    // A token we held has expired: the next round fetches another.
                    if self.tokens.locked().remove(&key).is_none() && token.is_some() {
                        return Err(NotDone::Fallback);
                    }
                }
                StatusCode::NOT_FOUND => return Err(NotDone::Missing),
                status if alone => {
                    let detail = format!("{status} {}", response.url());
                    let class = classify_about(image, Some(status.as_u16()), &detail);
                    return Err(NotDone::Refused(Failure::new(class, detail)));
                }
                _ => return Err(NotDone::Fallback),
            }
        }
        Err(NotDone::Fallback)
    }

    /// The token to send for `key`: `Some(None)` for none (the registry takes no tokens, or
    /// has not asked for one yet), `None` when one is wanted and could not be had.
    async fn token(
        &self,
        key: &(String, String),
        auth: &OciAuth,
        (client, reference): TokenSource<'_>,
    ) -> Option<Option<String>> {
        if let Some(t) = self.tokens.locked().get(key) {
            return Some(Some(t.clone()));
        }
        if !self.bearer.locked().contains(&key.0) {
            return Some(None);
        }
        // oci-client follows the challenge (realm, service, scope) with the credentials.
        let token = client?
            .auth(reference, auth, RegistryOperation::Pull)
            .await
            .ok()??;
        self.tokens.locked().insert(key.clone(), token.clone());
        Some(Some(token))
    }

    fn url(&self, image: &ImageRef) -> String {
        let reference = image.digest().or(image.tag()).unwrap_or("latest");
        format!("{}/manifests/{reference}", self.repository_url(image))
    }

    fn blob_url(&self, image: &ImageRef, digest: &str) -> String {
        format!("{}/blobs/{digest}", self.repository_url(image))
    }

    /// `scheme://host/v2/repository`.
    fn repository_url(&self, image: &ImageRef) -> String {
        let host = image.registry();
        let scheme = if self.plain.speaks(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2/{}", image.repository())
    }

    /// Keeps the budget an answer states, if it states one.
    fn note_budget(&self, host: &str, headers: &HeaderMap) {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(b) = budget(text("ratelimit-limit"), text("ratelimit-remaining")) {
            self.budgets.locked().insert(host.to_owned(), b);
        }
    }

    /// Sends nothing to `host` for `wait`.
    pub(super) fn block(&self, host: &str, wait: Duration) {
        self.blocked
            .locked()
            .insert(host.to_owned(), SystemTime::now() + wait);
    }

    /// The failure to report instead of asking `image`'s registry, while it is blocked.
    pub(super) fn refusal(&self, host: &str) -> Option<Failure> {
        let until = *self.blocked.locked().get(host)?;
        let left = until.duration_since(SystemTime::now()).ok()?;
        let detail = format!(
            "registry {host} answered 429 (too many requests): nothing is sent to it until {}",
            httpdate::fmt_http_date(until)
        );
        Some(
            Failure::new(FailureClass::RateLimited, detail)
                .retry_after(Some(left.as_secs().max(1))),
        )
    }

    /// Each registry's budget, as its last answer stated it.
    pub(super) fn budgets(&self) -> BTreeMap<String, Budget> {
        self.budgets.locked().clone()
    }
}

/// Whether a 401 asks for a bearer token (not Basic credentials).
fn is_bearer_challenge(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer "))
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

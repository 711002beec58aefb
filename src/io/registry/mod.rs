//! Resolving a tag to the digest this host must run, asking the registry as little as possible.
//!
//! One HEAD request on the tag's manifest gives its digest (registries such as Docker Hub do not
//! count HEAD requests against pull rate limits). For a multi-platform index that digest is the
//! index's; the platform's own manifest digest is read from the index once, with a GET by
//! digest, and remembered in the state file: an index never changes, so later checks of an
//! unchanged tag are one HEAD again. Pins are always the platform's manifest digest, which is
//! what a pull by digest records locally: comparing an index digest with a platform digest is
//! the false alarm diun users hit.
//!
//! Why not the engine's `/distribution/{name}/json`: measured against distribution 2.8 on
//! Docker 20.10, it costs a HEAD and a GET of the manifest and a GET of the config blob per
//! call, and still does not return the platform's digest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth as OciAuth;

use futures_util::future::BoxFuture;

mod archive;
mod direct;
mod roots;
mod signature;
use direct::{DEFAULT_RETRY_AFTER, Direct, Head, NotDone};
use roots::NoRoots;

use crate::io::credentials::{CredentialSource, RegistryAuth};
use crate::model::failure::{Failure, FailureClass, classify_about, with_causes};
use crate::model::plain_http::{EngineInsecure, PlainHttp};
use crate::model::platform::{IndexCache, index_platforms};
use crate::model::rate_limit::Budget;
use crate::model::reference::ImageRef;
use crate::model::signature::Signature;
use crate::model::sync::Locked;
use crate::policy::config::Config;
use crate::policy::lockfile::{LockEntry, LockFile};

/// Media types of manifests and indexes we accept.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// What stowage calls itself in registries' access logs.
pub(crate) const USER_AGENT: &str = concat!("stowage/", env!("CARGO_PKG_VERSION"));

/// What a tag resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The digest of the manifest for the wanted platform: what to pin and pull.
    pub digest: String,
    /// The index digest, when the tag names a multi-platform index.
    pub index: Option<String>,
}

/// What the puller and the pruner ask of registries: the seam where tests put a fake.
pub trait Registry: Send + Sync {
    /// The tag's digest for `platform` (default: the host's).
    fn resolve<'a>(
        &'a self,
        image: &'a ImageRef,
        platform: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Resolved, Failure>>;

    /// Whether the registry serves `image` (`name@digest`).
    fn serves<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<bool, Failure>>;

    /// The platform tags resolve to when the config names none.
    fn host_platform(&self) -> &str;

    /// What is known about indexes now, for the state file.
    fn cache_snapshot(&self) -> IndexCache;

    /// Each registry's request budget, as its last answer stated it.
    fn budgets(&self) -> BTreeMap<String, Budget>;

    /// The failure to report instead of sending anything to `host` (the engine's pulls
    /// included), while it is left alone after a 429.
    fn refusal(&self, host: &str) -> Option<Failure>;

    /// `host` refused a pull for its rate limit (the engine said so, without `Retry-After`):
    /// leave it alone for a while.
    fn rate_limited(&self, host: &str);

    /// The cosign signatures stored for `signed` (`name@digest`), in either layout; empty
    /// when none.
    fn signatures<'a>(
        &'a self,
        signed: &'a ImageRef,
    ) -> BoxFuture<'a, Result<Vec<Signature>, Failure>>;

    /// Fetches `image` (`name@digest`) for the host's platform into the directory `dir` as an
    /// OCI image layout archive that loads as `name`: the archive's path.
    fn archive<'a>(
        &'a self,
        image: &'a ImageRef,
        name: &'a str,
        dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<std::path::PathBuf, Failure>>;
}

impl Registry for Resolver {
    fn resolve<'a>(
        &'a self,
        image: &'a ImageRef,
        platform: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Resolved, Failure>> {
        Box::pin(Resolver::resolve(self, image, platform))
    }

    fn serves<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<bool, Failure>> {
        Box::pin(Resolver::serves(self, image))
    }

    fn host_platform(&self) -> &str {
        Resolver::host_platform(self)
    }

    fn cache_snapshot(&self) -> IndexCache {
        Resolver::cache_snapshot(self)
    }

    fn budgets(&self) -> BTreeMap<String, Budget> {
        Resolver::budgets(self)
    }

    fn refusal(&self, host: &str) -> Option<Failure> {
        self.direct.as_ref().and_then(|d| d.refusal(host))
    }

    fn rate_limited(&self, host: &str) {
        if let Some(direct) = &self.direct {
            direct.block(host, DEFAULT_RETRY_AFTER);
        }
    }

    fn signatures<'a>(
        &'a self,
        signed: &'a ImageRef,
    ) -> BoxFuture<'a, Result<Vec<Signature>, Failure>> {
        Box::pin(Resolver::signatures(self, signed))
    }

    fn archive<'a>(
        &'a self,
        image: &'a ImageRef,
        name: &'a str,
        dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<std::path::PathBuf, Failure>> {
        Box::pin(Resolver::archive(self, image, name, dir))
    }
}

/// A registry client for resolution.
pub struct Resolver {
    /// Which registries are spoken to over plain HTTP.
    plain: PlainHttp,
    /// Plain HTTP for the registries of the config that `plain` says so of, HTTPS for the
    /// rest.
    protocol: ClientProtocol,
    /// One client per registry, replaced when its credentials change: oci-client keeps the
    /// first credentials it is given for a registry, and a `docker login` (or a rotated,
    /// expiring password) must take effect without a restart.
    clients: Mutex<BTreeMap<String, (OciAuthKey, oci_client::Client)>>,
    credentials: CredentialSource,
    /// The platform to resolve for when the config names none (the engine's).
    host_platform: String,
    /// Shared with the state file.
    cache: Arc<Mutex<IndexCache>>,
    /// Stowage's own manifest requests (`None`: no HTTP client; oci-client does it all).
    direct: Option<Direct>,
    /// Set on a host without CA certificates: plain-HTTP registries are still asked, HTTPS
    /// ones fail saying so.
    no_roots: Option<NoRoots>,
}

impl Resolver {
    /// A resolver for the registries of `config`: those marked `insecure`, and those the
    /// engine speaks plain HTTP to (`engine`, as it said; `None`: loopback, Docker's default)
    /// are spoken to over plain HTTP, all others over HTTPS.
    pub fn new(
        config: &Config,
        credentials: CredentialSource,
        host_platform: String,
        cache: Arc<Mutex<IndexCache>>,
        engine: Option<EngineInsecure>,
    ) -> Resolver {
        let mut insecure_hosts: Vec<String> = Vec::new();
        let hosts = config
            .images
            .iter()
            .map(|i| i.reference.registry().to_owned())
            .chain(config.registries.iter().flat_map(|r| {
                std::iter::once(r.host.clone()).chain(r.mirrors.iter().map(|m| m.host.clone()))
            }));
        let hosts: Vec<String> = hosts.collect();
        for host in &hosts {
            let insecure = config.registry(host).is_some_and(|r| r.insecure)
                || config
                    .registries
                    .iter()
                    .any(|r| r.insecure && r.mirrors.iter().any(|m| &m.host == host));
            if insecure && !insecure_hosts.contains(host) {
                insecure_hosts.push(host.clone());
            }
        }
        let rule = PlainHttp::new(insecure_hosts, engine);
        let mut plain: Vec<String> = hosts.into_iter().filter(|h| rule.speaks(h)).collect();
        plain.sort();
        plain.dedup();
        let direct = Direct::new(rule.clone(), None);
        let no_roots = direct.is_none().then(NoRoots::probe).flatten();
        let direct = direct.or_else(|| Direct::new(rule.clone(), no_roots.as_ref()));
        Resolver {
            direct,
            no_roots,
            plain: rule,
            protocol: ClientProtocol::HttpsExcept(plain),
            clients: Mutex::new(BTreeMap::new()),
            credentials,
            host_platform,
            cache,
        }
    }

    /// A resolver that starts from what is known about indexes: `known` (the state file's
    /// cache) and the entries of `lock` (an entry of an index is exactly what the cache holds),
    /// none of which is fetched again.
    pub(crate) fn knowing(
        config: &Config,
        credentials: CredentialSource,
        host_platform: String,
        known: IndexCache,
        lock: Option<&LockFile>,
        engine: Option<EngineInsecure>,
    ) -> Resolver {
        let resolver = Resolver::new(
            config,
            credentials,
            host_platform,
            Arc::new(Mutex::new(known)),
            engine,
        );
        if let Some(lock) = lock {
            resolver.learn(
                lock.entries
                    .values()
                    .map(|e| (e.digest.clone(), e.platforms.clone())),
            );
        }
        resolver
    }

    /// The tag's digest for `platform` (default: the host's).
    pub async fn resolve(
        &self,
        image: &ImageRef,
        platform: Option<&str>,
    ) -> Result<Resolved, Failure> {
        let platform = platform.unwrap_or(&self.host_platform);
        let entry = self.resolve_entry(image).await?;
        if entry.platforms.is_empty() {
            return Ok(Resolved {
                digest: entry.digest,
                index: None,
            });
        }
        match entry.digest_for(platform) {
            Some(digest) => Ok(Resolved {
                digest,
                index: Some(entry.digest),
            }),
            None => Err(Failure::new(
                FailureClass::NotFound,
                format!(
                    "no matching manifest for {platform} in the index {} (it has {})",
                    entry.digest,
                    entry
                        .platforms
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// What the tag names, for every platform: its digest (one HEAD request) and, for an
    /// index, each platform's manifest digest (one GET of the index, the first time only).
    pub async fn resolve_entry(&self, image: &ImageRef) -> Result<LockEntry, Failure> {
        // One credential lookup serves the HEAD and, when needed, the index's GET.
        let auth = self.auth(image.registry()).await;
        let head = self.head(image, &auth, Absence::AskAgain).await?;
        let known = self.cache.locked().get(&head.digest).cloned();
        let platforms = match known {
            Some(p) => p,
            // The HEAD said it is one image's manifest: no index to read.
            None if head.is_single_manifest() => BTreeMap::new(),
            None => self.read_index(image, &head.digest, &auth).await?,
        };
        self.cache
            .locked()
            .entry(head.digest.clone())
            .or_insert_with(|| platforms.clone());
        Ok(LockEntry {
            digest: head.digest,
            platforms,
            signed_by: None,
        })
    }

    /// HEAD of the manifest `image` names: sent by stowage itself, else (an answer it did not
    /// expect) through oci-client, whose HEAD does not say the media type.
    async fn head(
        &self,
        image: &ImageRef,
        auth: &OciAuth,
        absence: Absence,
    ) -> Result<Head, Failure> {
        self.head_once(image, auth, absence).await.map_err(|f| {
            let sent = !matches!(auth, OciAuth::Anonymous);
            f.read_credentials_from(|| self.credentials.describe(sent))
        })
    }

    /// [`Self::head`], its failure not yet told where the credentials came from.
    async fn head_once(
        &self,
        image: &ImageRef,
        auth: &OciAuth,
        absence: Absence,
    ) -> Result<Head, Failure> {
        let (client, reference) = self.request_with(image, auth)?;
        if let Some(direct) = &self.direct {
            match direct
                .head(image, auth, (client.as_ref(), &reference))
                .await
            {
                Ok(head) => return Ok(head),
                Err(NotDone::Refused(f)) => return Err(f),
                Err(NotDone::Missing) if client.is_none() || absence == Absence::Answer => {
                    return Err(not_found(image));
                }
                Err(NotDone::Fallback | NotDone::Missing | NotDone::TooLarge) => {}
            }
        }
        let digest = self
            .fallback(image, client)?
            .fetch_manifest_digest(&reference, auth)
            .await
            .map_err(|e| self.failure(image, e))?;
        Ok(Head {
            digest,
            media_type: None,
        })
    }

    /// The platforms of the index `digest` (empty for a single image's manifest), read once.
    async fn read_index(
        &self,
        image: &ImageRef,
        digest: &str,
        auth: &OciAuth,
    ) -> Result<BTreeMap<String, String>, Failure> {
        let by_digest: ImageRef = format!("{}@{digest}", image.name())
            .parse()
            .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
        let (client, reference) = self.request_with(&by_digest, auth)?;
        let direct = match &self.direct {
            Some(direct) => {
                let tokens = (client.as_ref(), &reference);
                direct.get(&by_digest, auth, tokens).await
            }
            None => Err(NotDone::Fallback),
        };
        let body = match direct {
            Ok(body) => body,
            Err(NotDone::Refused(f)) => return Err(f),
            Err(NotDone::Missing) if client.is_none() => return Err(not_found(&by_digest)),
            Err(NotDone::TooLarge) => {
                return Err(Failure::new(
                    FailureClass::Engine,
                    format!("the manifest {digest} of {image} is larger than 4 MiB"),
                ));
            }
            Err(NotDone::Fallback | NotDone::Missing) => self
                .fallback(image, client)?
                .pull_manifest_raw(&reference, auth, MANIFEST_TYPES)
                .await
                .map_err(|e| self.failure(image, e))?
                .0
                .to_vec(),
        };
        index_platforms(&body).map_err(|e| {
            Failure::new(
                FailureClass::Engine,
                format!("unreadable manifest {digest}: {e}"),
            )
        })
    }

    /// oci-client's error about `image`, classified; a rate limit blocks the registry for a
    /// while (oci-client does not pass on its `Retry-After`).
    fn failure(&self, image: &ImageRef, error: OciDistributionError) -> Failure {
        let failure = failure_from(image, error);
        if failure.class == FailureClass::RateLimited
            && let Some(direct) = &self.direct
        {
            direct.block(image.registry(), DEFAULT_RETRY_AFTER);
            return failure.retry_after(Some(DEFAULT_RETRY_AFTER.as_secs()));
        }
        failure
    }

    /// Each registry's budget, as its last answer stated it.
    pub fn budgets(&self) -> BTreeMap<String, Budget> {
        self.direct
            .as_ref()
            .map(Direct::budgets)
            .unwrap_or_default()
    }

    /// Whether the registry serves this reference (`name@digest`), with one HEAD request: an
    /// image whose content is there can be pulled again after it is removed.
    pub async fn serves(&self, image: &ImageRef) -> Result<bool, Failure> {
        let auth = self.auth(image.registry()).await;
        match self.head(image, &auth, Absence::Answer).await {
            Ok(_) => Ok(true),
            Err(f) if f.class == FailureClass::NotFound => Ok(false),
            Err(f) => Err(f),
        }
    }

    /// What an oci-client request about `image` with `auth` needs: the client for its
    /// registry, and the reference in the client's terms.
    fn request_with(
        &self,
        image: &ImageRef,
        auth: &OciAuth,
    ) -> Result<(Option<oci_client::Client>, Reference), Failure> {
        // Built from the parts, never parsed: parsing compiles oci-spec's reference regex, which
        // stays resident (src/model/reference/grammar.rs says why we parse by hand).
        let (registry, repository) = (image.registry().to_owned(), image.repository().to_owned());
        let reference = match (image.digest(), image.tag()) {
            (Some(digest), _) => Reference::with_digest(registry, repository, digest.to_owned()),
            (None, tag) => {
                Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_owned())
            }
        };
        let client = self.client_for(image.registry(), auth)?;
        Ok((client, reference))
    }

    /// The client for `registry` with these credentials (a new one when they changed).
    /// On a host without CA certificates there is none (oci-client cannot be built there):
    /// `None` for a plain-HTTP registry, which stowage's own requests serve, and a failure
    /// for an HTTPS one.
    fn client_for(
        &self,
        registry: &str,
        auth: &OciAuth,
    ) -> Result<Option<oci_client::Client>, Failure> {
        if let Some(no_roots) = &self.no_roots {
            return match self.is_plain(registry) {
                true => Ok(None),
                false => Err(no_roots.failure(registry)),
            };
        }
        let key = auth_key(auth);
        let mut clients = self.clients.locked();
        match clients.get(registry) {
            Some((k, client)) if *k == key => Ok(Some(client.clone())),
            _ => {
                // A registry the rule says is plain HTTP is, even when the config does not
                // name it (the pruner asks about any image's registry).
                let protocol = if self.plain.speaks(registry) {
                    ClientProtocol::Http
                } else {
                    self.protocol.clone()
                };
                let client = oci_client::Client::try_from(ClientConfig {
                    protocol,
                    user_agent: USER_AGENT,
                    ..ClientConfig::default()
                })
                .map_err(|e| {
                    Failure::new(
                        FailureClass::Network,
                        format!(
                            "cannot set up a client for registry {registry}: {e} (are the \
                             system's CA certificates installed?)"
                        ),
                    )
                })?;
                clients.insert(registry.to_owned(), (key, client.clone()));
                Ok(Some(client))
            }
        }
    }

    /// Whether `registry` is spoken to over plain HTTP.
    fn is_plain(&self, registry: &str) -> bool {
        self.plain.speaks(registry)
    }

    /// The oci-client a fallback needs, or the failure that says why there is none.
    fn fallback(
        &self,
        image: &ImageRef,
        client: Option<oci_client::Client>,
    ) -> Result<oci_client::Client, Failure> {
        client.ok_or_else(|| match &self.no_roots {
            Some(no_roots) => no_roots.fallback_failure(image.registry()),
            None => Failure::new(
                FailureClass::Network,
                format!("no registry client for {}", image.registry()),
            ),
        })
    }

    /// The platform tags resolve to when the config names none.
    pub fn host_platform(&self) -> &str {
        &self.host_platform
    }

    /// Adds what is already known about indexes (from a lock file's entries), so they are not
    /// fetched again.
    pub fn learn(&self, entries: impl IntoIterator<Item = (String, BTreeMap<String, String>)>) {
        let mut cache = self.cache.locked();
        for (digest, platforms) in entries {
            cache.entry(digest).or_insert(platforms);
        }
    }

    /// The index cache as it is now, for the state file.
    pub fn cache_snapshot(&self) -> IndexCache {
        self.cache.locked().clone()
    }

    async fn auth(&self, registry: &str) -> OciAuth {
        match self
            .credentials
            .lookup_timed(registry, "resolving anonymously")
            .await
        {
            Some(RegistryAuth {
                username: Some(u),
                password: Some(p),
                ..
            }) => OciAuth::Basic(u, p),
            _ => OciAuth::Anonymous,
        }
    }
}

/// What identifies a set of credentials, to notice when they change. Kept in memory only.
type OciAuthKey = Option<(String, String)>;

fn auth_key(auth: &OciAuth) -> OciAuthKey {
    match auth {
        OciAuth::Basic(u, p) => Some((u.clone(), p.clone())),
        OciAuth::Bearer(t) => Some((String::new(), t.clone())),
        OciAuth::Anonymous => None,
    }
}

/// What a 404 to stowage's own HEAD means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Absence {
    /// Asked again through oci-client, whose failure users know (a tag to pull: a missing
    /// login can read as "not found", and its words say more).
    AskAgain,
    /// The answer (is this `name@digest` served?): asking again cost four more requests a
    /// digest (oci-client's ping, HEAD, ping, GET), and a pruner asks of every name of every
    /// candidate on a store whose digests do not show a registry copy (Podman).
    Answer,
}

/// A 404 for `image`'s manifest, where stowage's own request is the only one made.
fn not_found(image: &ImageRef) -> Failure {
    Failure::new(
        FailureClass::NotFound,
        format!("{image}: manifest unknown (404 from the registry)"),
    )
}

fn failure_from(image: &ImageRef, error: OciDistributionError) -> Failure {
    match &error {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => {
            Failure::new(FailureClass::Auth, error.to_string())
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            Failure::new(FailureClass::NotFound, error.to_string())
        }
        OciDistributionError::RequestError(_) => {
            Failure::new(FailureClass::Network, with_causes(&error))
        }
        OciDistributionError::ServerError { code, .. } => {
            let message = error.to_string();
            Failure::new(classify_about(image, Some(*code), &message), message)
        }
        _ => {
            let message = error.to_string();
            Failure::new(classify_about(image, None, &message), message)
        }
    }
}

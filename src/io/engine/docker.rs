//! The Docker Engine API, through bollard.
//!
//! bollard is pinned to 0.21.1, which never puts the API version in the request path (bollard
//! #736). On a unix socket the transport puts it there ([`super::transport`]): the newest
//! version stowage is tested against, within what the engine serves. Over TCP the engine
//! answers in its own newest schema. We read only fields that exist in every API version we
//! support (1.41 and later), and the integration tests fail loudly if one comes back empty.

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, PruneBuildOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Engine, OnBytes, PullRequest, Pulled, unfollowed_bytes};
use crate::io::credentials::RegistryAuth;
use crate::model::failure::{Failure, FailureClass, classify_about, io_cause, with_causes};
use crate::model::image::{
    BuildCache, Deleted, Deletions, ImageStore, LocalImage, StoreEvent, StoreImage, qualified_id,
};
use crate::model::plain_http::EngineInsecure;
use crate::model::reference::ImageRef;
use crate::model::reference::sort_engine_names;

/// How long a listing of the images is made again while images going make it fail (Podman
/// 4.3), and how long it waits between tries. Every listing made while another process's `rmi`
/// of 24 images ran failed (three tries at once were not enough: `engine::images_are_listed_
/// while_they_go`), so the tries are spread over the time such a removal takes.
const LISTING_RETRIED_FOR: std::time::Duration = std::time::Duration::from_secs(10);
const LISTING_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the engine listens when neither `--docker-host` nor `DOCKER_HOST` says otherwise.
pub(crate) const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Why the engine could not be connected to.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address itself is wrong: a usage error, not worth a retry.
    #[error("{0}")]
    BadAddress(String),
    /// Nothing answered there (yet).
    #[error("{0}")]
    Unreachable(Failure),
}

/// A connection to a Docker engine.
#[derive(Clone)]
pub struct DockerEngine {
    /// The bollard client; cheap to clone, shares one connection pool.
    docker: Docker,
    /// The address it was reached at, for messages.
    host: String,
    /// How it keeps images.
    image_store: ImageStore,
    /// Podman's own API on the same socket, for removals (see [`super::libpod`]).
    libpod: Option<super::libpod::Libpod>,
    /// The unix socket, for the answers stowage reads itself; `None` over TCP.
    socket: Option<super::transport::Socket>,
    /// The API version the engine answers in, as it says it (`1.51`).
    api_version: String,
    /// The registries it speaks plain HTTP to, as its `/info` says.
    insecure: Option<EngineInsecure>,
    /// Its platform (`os/arch`), as the `/version` of the connection said: asked once, since
    /// Podman 4.3 takes 0.4 s to answer `/version` (a third of a 20-image pull's time).
    platform: Option<String>,
    /// Its data root, as the `/info` of the connection said: asked once, as the daemon reads it
    /// once at its start (Podman 4.3 takes 0.2 s to answer `/info`, and each prune cycle asked).
    data_root: Option<std::path::PathBuf>,
    /// How far its clock is ahead of this host's (seconds), from the `/info` of the
    /// connection: a remote engine's clock can differ.
    clock_ahead: i64,
}

impl DockerEngine {
    /// Connects to the engine at `host` (a `unix://`, `tcp://` or `http://` URL) and negotiates
    /// the API version with it.
    pub async fn connect(host: Option<&str>) -> Result<DockerEngine, ConnectError> {
        let host = with_scheme(host.unwrap_or(DEFAULT_DOCKER_HOST));
        let unreachable = |e: &BollardError| {
            ConnectError::Unreachable(Failure::new(
                FailureClass::Engine,
                format!(
                    "cannot reach the Docker engine at {host}: {} ({})",
                    innermost(e),
                    unreachable_advice(e)
                ),
            ))
        };
        // Unix sockets through our pooled transport; tcp:// and http:// as bollard builds them.
        let socket = if host.starts_with("unix://") {
            Some(super::transport::Socket::at(&host).map_err(|e| unreachable(&e))?)
        } else {
            None
        };
        let docker = match &socket {
            Some(socket) => socket.docker(),
            None => Docker::connect_with_host(&host),
        };
        let docker = docker.map_err(|e| match e {
            // The socket appears when dockerd starts: worth waiting for.
            BollardError::SocketNotFoundError(_) => unreachable(&e),
            // A malformed or unsupported address will never work: say so instead of retrying.
            _ => ConnectError::BadAddress(format!(
                "invalid Docker engine address \"{host}\": {e} (expected unix:///path/to/docker.sock, \
                 tcp://host:port or http://host:port)"
            )),
        })?;
        let version = docker.version().await.map_err(|e| unreachable(&e))?;
        let served = version.api_version.clone().unwrap_or_default();
        let api_version = match &socket {
            Some(socket) => socket
                .speak(&served, version.min_api_version.as_deref())
                .unwrap_or(served),
            // Over TCP, bollard's own client: the engine's newest schema (bollard #736).
            None => served,
        };
        let platform = platform_of(&version);
        let info = docker.info().await.map_err(|e| unreachable(&e))?;
        let image_store = image_store_of(&version, &info);
        let data_root = info.docker_root_dir.clone().map(std::path::PathBuf::from);
        let clock_ahead = clock_ahead_of(info.system_time.as_deref(), chrono::Utc::now());
        let insecure = info.registry_config.map(insecure_of);
        tracing::debug!(
            host,
            image_store = image_store.name(),
            api_version,
            "connected to the engine"
        );
        let libpod = match (&socket, image_store) {
            (Some(socket), ImageStore::Podman) => Some(super::libpod::Libpod::on(socket.clone())),
            _ => None,
        };
        Ok(DockerEngine {
            docker,
            host,
            image_store,
            libpod,
            socket,
            api_version,
            insecure,
            platform,
            data_root,
            clock_ahead,
        })
    }

    /// The address of the engine.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The underlying client, for tests that need to arrange the engine's state.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

impl Engine for DockerEngine {
    fn names_digests_by_pull(&self) -> bool {
        self.image_store != ImageStore::Podman
    }

    fn insecure_registries(&self) -> Option<EngineInsecure> {
        self.insecure.clone()
    }

    async fn list_images(&self) -> Result<Vec<LocalImage>, Failure> {
        let options = ListImagesOptionsBuilder::new().all(false).build();
        let summaries = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        Ok(summaries
            .into_iter()
            .map(|s| {
                let (tags, digests) = sort_engine_names(&s.repo_tags, &s.repo_digests);
                LocalImage {
                    id: s.id,
                    tags,
                    digests,
                }
            })
            .collect())
    }

    async fn pull(&self, request: &PullRequest, bytes: &OnBytes<'_>) -> Result<Pulled, Failure> {
        let from_image = request.reference.pull_ref();
        let mut options = CreateImageOptionsBuilder::new().from_image(&from_image);
        if let Some(platform) = &request.platform {
            options = options.platform(platform);
        }
        let credentials = request.auth.as_ref().map(to_docker_credentials);
        let mut stream = self
            .docker
            .create_image(Some(options.build()), None, credentials);
        let reference = &request.reference;
        let mut pulled = Pulled::default();
        let mut finished = false;
        let mut downloaded = false;
        let mut layers = LayerBytes::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| failure_from(&self.host, Some(reference), e))?;
            if let (Some(id), Some(status)) = (&info.id, &info.status) {
                let detail = info.progress_detail.as_ref();
                let current = detail.and_then(|d| d.current);
                let total = detail.and_then(|d| d.total);
                if let Some((done, all)) = layers.update(id, status, current, total) {
                    bytes(done, all);
                }
            }
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(Failure::new(
                    classify_about(reference, None, &detail),
                    detail,
                ));
            }
            let Some(status) = info.status else { continue };
            // The engine ends a pull with a summary line; these two are stable across versions.
            if let Some(digest) = status.strip_prefix("Digest: ") {
                pulled.digest = Some(digest.trim().to_owned());
            } else if status.starts_with("Status: Downloaded newer image") {
                pulled.updated = true;
                finished = true;
            } else if status.starts_with("Status: Image is up to date") {
                finished = true;
            } else if status == "Download complete" || status == "Pull complete" {
                downloaded = true;
            }
        }
        // Podman ends every pull after its progress lines, with no summary. A pull by digest
        // is content-addressed: when the engine now has that content, the pull worked, whatever
        // the stream said. A tag may have been there before, so a pull by tag is taken on the
        // engine's word only where no summary is the engine's way. A cut stream fails below.
        let no_summary_is_normal =
            reference.digest().is_some() || self.image_store == ImageStore::Podman;
        if !finished
            && no_summary_is_normal
            && let Some(image) = self.inspect(&from_image).await?
        {
            // By tag, the digest is the one recorded for the repository pulled from.
            let (_, digests) = sort_engine_names(&[], &image.repo_digests.unwrap_or_default());
            let name = format!("{}@", reference.name());
            pulled.digest = reference.digest().map(str::to_owned).or_else(|| {
                digests
                    .iter()
                    .find_map(|d| d.strip_prefix(&name).map(str::to_owned))
            });
            pulled.updated = downloaded;
            finished = true;
        }
        if !finished {
            // A stream cut short (engine restart, proxy) must not pass for "up to date".
            return Err(Failure::new(
                FailureClass::Engine,
                "the engine ended the pull without reporting a result",
            ));
        }
        Ok(pulled)
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), Failure> {
        self.tag_impl(source, repo, tag).await
    }

    async fn platform(&self) -> Result<String, Failure> {
        self.platform_impl().await
    }
}

/// A container as stowage reads it from the engine's list: only its image. bollard's own
/// struct reads the container's state with a closed enum, and Podman says `stopped` (not
/// Docker's word) of a container that has just exited: in its list every few polls on a
/// host where containers come and go (Podman 4.3 to 5.8; podman#28359), which failed the
/// whole listing, and with it the prune cycle.
#[derive(serde::Deserialize)]
struct ListedContainer {
    #[serde(rename = "ImageID", default)]
    image_id: Option<String>,
    /// When it was created (seconds since the epoch).
    #[serde(rename = "Created", default)]
    created: i64,
}

/// How many whole seconds the engine's clock (`/info`'s `SystemTime`, RFC 3339) is ahead of
/// this host's `now`; zero when the engine does not say or says something unreadable.
fn clock_ahead_of(system_time: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> i64 {
    system_time
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |engine| {
            (engine.with_timezone(&chrono::Utc) - now).num_seconds()
        })
}

/// An image's ID and names, as stowage reads them from the engine's inspect for the look before
/// a removal. bollard's own struct requires `RootFS.Type`, which Docker 28's containerd store
/// leaves out of an image record it kept without its content (after a delete that raced a
/// `docker create`): every look at such an image failed, and with it its removal. Whether an
/// image is really there ([`super::Store::has_image`]) is still asked through bollard's
/// struct, so that such a record does not pass for an image taken back.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageNames {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

impl DockerEngine {
    /// Whether the engine failed a listing of the images because one went while it was made:
    /// Podman 4.3 says "retrieving label for image ...: image not known", "retrieving parent
    /// of image ...: layer not known" or "checking if image ... is dangling: ... not known";
    /// Docker 26's and 28's containerd store "content digest sha256:...: not found", "failed to
    /// get rootfs of image ...", "failed to read config content", with a 404 (all seen by
    /// `engine::images_are_listed_while_they_go`).
    fn went_while_listed(&self, message: &str) -> bool {
        match self.image_store {
            ImageStore::Podman => message.contains("not known"),
            ImageStore::Containerd => message.contains("not found"),
            ImageStore::Classic => false,
        }
    }

    /// The ID and names of the image `name` names, over the unix socket; `None` when none.
    async fn names_on(
        &self,
        socket: &super::transport::Socket,
        name: &str,
    ) -> Result<Option<ImageNames>, Failure> {
        let failure = |e: String| {
            Failure::new(
                FailureClass::Engine,
                format!("cannot inspect {name} on the engine at {}: {e}", self.host),
            )
        };
        match socket.get_json(&format!("/images/{name}/json")).await {
            // Podman answers the inspect of an image removed while it looks with a 500, "image
            // not known", where Docker says 404: gone all the same (an adversarial run saw such
            // removals of someone else's fail the prune, exit 1).
            Err(e) if self.image_store == ImageStore::Podman && e.contains("image not known") => {
                Ok(None)
            }
            answer => answer.map_err(failure),
        }
    }

    /// Every container's image ID and creation time, over the unix socket.
    async fn containers_on(
        &self,
        socket: &super::transport::Socket,
    ) -> Result<Vec<ListedContainer>, Failure> {
        let failure = |e: String| {
            Failure::new(
                FailureClass::Engine,
                format!(
                    "cannot list the containers of the engine at {}: {e}",
                    self.host
                ),
            )
        };
        socket
            .get_json("/containers/json?all=true")
            .await
            .map_err(failure)?
            .ok_or_else(|| failure(hyper::StatusCode::NOT_FOUND.to_string()))
    }

    /// Every container's image ID and creation time.
    async fn containers(&self) -> Result<Vec<ListedContainer>, Failure> {
        if let Some(socket) = &self.socket {
            return self.containers_on(socket).await;
        }
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        Ok(containers
            .into_iter()
            .map(|c| ListedContainer {
                image_id: c.image_id,
                created: c.created.unwrap_or(0),
            })
            .collect())
    }

    /// The image by this name or ID, `None` when the engine has none.
    async fn inspect(&self, name: &str) -> Result<Option<bollard::models::ImageInspect>, Failure> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(Some(image)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            // Podman's 500 for an image removed while it looks (see `names_on`).
            Err(BollardError::DockerResponseServerError {
                status_code: 500,
                message,
            }) if self.image_store == ImageStore::Podman && message.contains("image not known") => {
                Ok(None)
            }
            Err(e) => Err(failure_from(&self.host, None, e)),
        }
    }

    /// Whether the engine describes the image's root filesystem: by its type, not by its
    /// layers (an image built `FROM scratch` with no file has none and is whole).
    async fn described(&self, id: &str) -> Result<bool, Failure> {
        match self.docker.inspect_image(id).await {
            Ok(image) => Ok(image.root_fs.is_some_and(|r| !r.typ.is_empty())),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            // Docker 28's record of an image without its blobs: `"RootFS": {}`, which has no
            // `Type` for bollard to read.
            Err(BollardError::JsonDataError { .. }) => Ok(false),
            Err(e) => Err(failure_from(&self.host, None, e)),
        }
    }

    async fn tag_impl(&self, source: &str, repo: &str, tag: &str) -> Result<(), Failure> {
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| failure_from(&self.host, None, e))
    }

    async fn platform_impl(&self) -> Result<String, Failure> {
        if let Some(platform) = &self.platform {
            return Ok(platform.clone());
        }
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        match platform_of(&v) {
            Some(platform) => Ok(platform),
            None => Err(Failure::new(
                FailureClass::Engine,
                "the engine did not say its platform (Os/Arch missing from /version)",
            )),
        }
    }
}

/// Asks the engine how it keeps images: Podman names itself among the version's components,
/// and Docker's containerd store shows as the `driver-type` of its storage driver.
fn image_store_of(
    version: &bollard::models::SystemVersion,
    info: &bollard::models::SystemInfo,
) -> ImageStore {
    let podman = version
        .components
        .iter()
        .flatten()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"));
    if podman {
        return ImageStore::Podman;
    }
    let containerd = info.driver_status.iter().flatten().any(|pair| {
        pair.iter()
            .any(|v| v.starts_with("io.containerd.snapshotter"))
    });
    if containerd {
        ImageStore::Containerd
    } else {
        ImageStore::Classic
    }
}

/// The registries the engine speaks plain HTTP to: Docker's insecure CIDRs and both engines'
/// registries marked insecure (Podman's, from its `registries.conf`).
/// `os/arch` from a `/version` answer, when it says both.
fn platform_of(version: &bollard::models::SystemVersion) -> Option<String> {
    match (&version.os, &version.arch) {
        (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
            Some(format!("{os}/{arch}"))
        }
        _ => None,
    }
}

fn insecure_of(config: bollard::models::RegistryServiceConfig) -> EngineInsecure {
    let cidrs = config.insecure_registry_cidrs.unwrap_or_default();
    let hosts = config
        .index_configs
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, index)| index.secure == Some(false))
        .map(|(name, index)| index.name.unwrap_or(name));
    EngineInsecure::new(cidrs.iter().map(String::as_str), hosts)
}

impl super::Store for DockerEngine {
    fn image_store(&self) -> ImageStore {
        self.image_store
    }

    fn clock_ahead(&self) -> i64 {
        self.clock_ahead
    }

    fn build_cache(&self) -> BuildCache {
        let size_bound =
            super::transport::api_version(&self.api_version).is_some_and(|v| v >= (1, 48));
        match self.image_store {
            ImageStore::Podman => BuildCache::None,
            _ if size_bound => BuildCache::ByAgeAndSize,
            _ => BuildCache::ByAge,
        }
    }

    async fn store(&self) -> Result<Vec<StoreImage>, Failure> {
        let list = |all: bool| async move {
            let options = ListImagesOptionsBuilder::new().all(all).build();
            let deadline = tokio::time::Instant::now() + LISTING_RETRIED_FOR;
            loop {
                match self.docker.list_images(Some(options.clone())).await {
                    // Podman 4.3 and Docker's containerd store fail the whole listing when an
                    // image goes while it is made: a removal of someone else's, or one of the
                    // pruner's own under way. Made again.
                    Err(BollardError::DockerResponseServerError {
                        status_code: 404 | 500,
                        message,
                    }) if self.went_while_listed(&message)
                        && tokio::time::Instant::now() < deadline =>
                    {
                        tracing::debug!(
                            "an image went while the engine listed them; listing again"
                        );
                        tokio::time::sleep(LISTING_RETRY_PAUSE).await;
                    }
                    other => return other,
                }
            }
        };
        let summaries = list(false)
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        // Builds leave intermediate images between a child and the image it was built FROM
        // (see [`lineage`]). Only images of the classic builder have parents: without any, the
        // second (and larger) listing is not needed.
        let everything = if summaries.iter().any(|s| !s.parent_id.is_empty()) {
            list(true)
                .await
                .map_err(|e| failure_from(&self.host, None, e))?
        } else {
            Vec::new()
        };
        let lineages = lineage::lineages(&summaries, &everything);
        Ok(summaries
            .into_iter()
            .zip(lineages)
            .map(|(s, (parent, steps))| {
                let (tags, digests) = sort_engine_names(&s.repo_tags, &s.repo_digests);
                let digest_names = match self.image_store {
                    ImageStore::Podman => podman_names(&s).1,
                    _ => digests.clone(),
                };
                StoreImage {
                    parent,
                    tags,
                    digests,
                    digest_names,
                    labels: s.labels.into_iter().collect(),
                    size: u64::try_from(s.size).unwrap_or(0),
                    created: s.created,
                    id: s.id,
                    steps,
                }
            })
            .collect())
    }

    async fn container_images(&self) -> Result<std::collections::HashSet<String>, Failure> {
        let containers = self.containers().await?;
        Ok(containers.into_iter().filter_map(|c| c.image_id).collect())
    }

    async fn containers_created(&self, id: &str) -> Result<Vec<i64>, Failure> {
        let containers = self.containers().await?;
        Ok(containers
            .into_iter()
            .filter(|c| c.image_id.as_deref() == Some(id))
            .map(|c| c.created)
            .collect())
    }

    async fn image_named(&self, name: &str) -> Result<Option<LocalImage>, Failure> {
        let named = match &self.socket {
            Some(socket) => self.names_on(socket, name).await?,
            None => self.inspect(name).await?.map(|image| ImageNames {
                id: image.id,
                repo_tags: image.repo_tags,
                repo_digests: image.repo_digests,
            }),
        };
        Ok(named.map(|image| {
            let (tags, digests) = sort_engine_names(
                &image.repo_tags.unwrap_or_default(),
                &image.repo_digests.unwrap_or_default(),
            );
            LocalImage {
                id: qualified_id(&image.id.unwrap_or_default()),
                tags,
                digests,
            }
        }))
    }

    async fn names_of(&self, id: &str) -> Result<Option<LocalImage>, Failure> {
        if self.image_store != ImageStore::Podman {
            return self.image_named(id).await;
        }
        // Podman's list of this one image: its inspect leaves out the `name@digest` names.
        // The `id` filter takes the bare hex only.
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        let filters = std::collections::HashMap::from([("id", vec![hex])]);
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let listed = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        Ok(listed
            .into_iter()
            .find(|s| qualified_id(&s.id) == qualified_id(id))
            .map(|s| {
                let (tags, digests) = podman_names(&s);
                LocalImage {
                    id: qualified_id(&s.id),
                    tags,
                    digests,
                }
            }))
    }

    async fn delete(&self, name: &str) -> Result<Deleted, Failure> {
        if let Some(libpod) = &self.libpod {
            let mut deleted = libpod.remove(name).await?;
            for id in &mut deleted.images {
                *id = qualified_id(id);
            }
            return Ok(deleted);
        }
        // noprune: the engine would otherwise delete every untagged parent the image leaves
        // childless, whatever policy says of it (a parent kept by a label, the daemon's own).
        // A parent that is itself a candidate goes in its own turn. Podman 4 ignores it.
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(true)
            .build();
        match self.docker.remove_image(name, Some(options), None).await {
            Ok(items) => Ok(self.deleted_from(items)),
            // Gone already: nothing removed.
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(Deleted::default()),
            // "conflict: unable to delete ... image is being used by ...", "... must be forced
            // - image is referenced in multiple repositories"
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Err(Failure::new(
                FailureClass::Engine,
                format!("the engine refused: {message}"),
            )),
            // Podman (over TCP, without its libpod API here) keeps a `name@digest` as a name
            // only for an image pulled by digest; any other is "tag not known": not a name.
            Err(BollardError::DockerResponseServerError {
                status_code: 500,
                message,
            }) if self.image_store == ImageStore::Podman && message.contains("not known") => {
                Ok(Deleted::default())
            }
            Err(other) => Err(failure_from(&self.host, None, other)),
        }
    }

    async fn has_image(&self, id: &str) -> Result<bool, Failure> {
        Ok(self.inspect(id).await?.is_some())
    }

    async fn image_whole(&self, id: &str) -> Result<bool, Failure> {
        if !self.described(id).await? {
            return Ok(false);
        }
        if self.image_store != ImageStore::Containerd {
            return Ok(true);
        }
        // Docker 26's containerd store (containerd 1.7) describes an image whose layer blobs
        // are gone, from its config, but leaves it out of its list (an adversarial run: 15 of
        // 15 raced images pulled back that way). Rare enough (a heal) to list the store for.
        let listed = self
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        Ok(listed
            .iter()
            .any(|s| qualified_id(&s.id) == qualified_id(id)))
    }

    async fn load(&self, archive: &std::path::Path) -> Result<(), Failure> {
        let file = tokio::fs::File::open(archive).await.map_err(|e| {
            Failure::new(FailureClass::Engine, format!("{}: {e}", archive.display()))
        })?;
        let body = tokio_util::io::ReaderStream::new(file);
        let options = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut answers = self.docker.import_image_stream(options, body, None);
        while let Some(answer) = answers.next().await {
            let answer = answer.map_err(|e| failure_from(&self.host, None, e))?;
            if let Some(error) = answer.error_detail.and_then(|d| d.message) {
                return Err(Failure::new(
                    FailureClass::Engine,
                    format!("the engine refused the image archive: {error}"),
                ));
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        by_digest: &ImageRef,
        tags: &[String],
        auth: Option<RegistryAuth>,
    ) -> Result<(), Failure> {
        let request = PullRequest {
            reference: by_digest.clone(),
            platform: None,
            auth,
        };
        self.pull(&request, &unfollowed_bytes).await?;
        let source = by_digest.pull_ref();
        for tag in tags {
            self.retag(&source, tag).await?;
        }
        Ok(())
    }

    async fn retag(&self, id: &str, name: &str) -> Result<(), Failure> {
        let reference: ImageRef = name
            .parse()
            .map_err(|e| Failure::new(FailureClass::Engine, format!("{name}: {e}")))?;
        match reference.tag() {
            Some(tag) => self.tag_impl(id, &reference.name(), tag).await,
            None => Ok(()),
        }
    }

    async fn container_image(&self, container: &str) -> Result<Option<String>, Failure> {
        match self
            .docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => Ok(c.image),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(failure_from(&self.host, None, e)),
        }
    }

    async fn deleted_since(&self, since_ns: i64) -> Result<Deletions, Failure> {
        self.deletions_since(since_ns).await
    }

    fn store_events(
        &self,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<StoreEvent, Failure>> + Send + 'static {
        self.events_since(since)
    }

    async fn prune_build_cache(
        &self,
        max_age: Option<std::time::Duration>,
        max_bytes: Option<u64>,
    ) -> Result<u64, Failure> {
        let mut options = PruneBuildOptionsBuilder::new();
        if let Some(age) = max_age {
            let mut filters = std::collections::HashMap::new();
            // "until", which every version takes ("unused-for" is its deprecated synonym).
            filters.insert("until".to_owned(), vec![format!("{}s", age.as_secs())]);
            options = options.filters(&filters);
        }
        if let Some(bytes) = max_bytes {
            // Honoured from API 1.48 on; the pruner asks older engines for none (see
            // [`BuildCache::ByAge`]).
            options = options.max_used_space(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let response = self
            .docker
            .prune_build(Some(options.build()))
            .await
            .map_err(|e| failure_from(&self.host, None, e))?;
        Ok(response
            .space_reclaimed
            .and_then(|b| u64::try_from(b).ok())
            .unwrap_or(0))
    }

    async fn data_root(&self) -> Result<Option<std::path::PathBuf>, Failure> {
        Ok(self.data_root.clone())
    }
}

impl DockerEngine {
    /// A DELETE's answer as plain data. Docker's classic store lists the image it deleted and
    /// then the layers that went with it (chain IDs, not images): with parents never pruned,
    /// only the first is an image. The containerd store and Podman list images only.
    fn deleted_from(&self, items: Vec<bollard::models::ImageDeleteResponseItem>) -> Deleted {
        let mut deleted = Deleted::default();
        for item in items {
            if let Some(name) = item.untagged {
                deleted.untagged.push(name);
            }
            if let Some(id) = item.deleted
                && (self.image_store != ImageStore::Classic || deleted.images.is_empty())
            {
                deleted.images.push(qualified_id(&id));
            }
        }
        deleted
    }
}

/// A pull's bytes per layer, from the engine's progress lines: `Downloading` carries the
/// layer's bytes so far and its size; a layer done or already present counts whole.
#[derive(Debug, Default)]
struct LayerBytes {
    layers: std::collections::BTreeMap<String, (u64, u64)>,
}

impl LayerBytes {
    /// Takes one progress line; the new sums (downloaded, in all) when they changed.
    fn update(
        &mut self,
        id: &str,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
    ) -> Option<(u64, u64)> {
        let size = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
        let entry = match status {
            "Downloading" => {
                let all = size(total).filter(|t| *t > 0)?;
                (size(current).unwrap_or(0).min(all), all)
            }
            "Download complete" | "Pull complete" | "Already exists" => {
                let &(_, all) = self.layers.get(id)?;
                (all, all)
            }
            _ => return None,
        };
        let before = self.layers.insert(id.to_owned(), entry);
        (before != Some(entry)).then(|| {
            self.layers
                .values()
                .fold((0, 0), |(d, a), (ld, la)| (d + ld, a + la))
        })
    }
}

/// An image's names in Podman's list, its tags and its `name@digest` names: Podman counts among
/// `RepoTags` the `name@digest` it was pulled by (its inspect does not), and lists in
/// `RepoDigests` a digest for every repository the content is in, a name or not.
fn podman_names(summary: &bollard::models::ImageSummary) -> (Vec<String>, Vec<String>) {
    sort_engine_names(&summary.repo_tags, &[])
}

fn to_docker_credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
        identitytoken: auth.identity_token.clone(),
        serveraddress: Some(auth.server.clone()),
        ..Default::default()
    }
}

/// What to do when the engine cannot be reached, from the OS's reason.
fn unreachable_advice(error: &BollardError) -> &'static str {
    match io_cause(error) {
        Some(std::io::ErrorKind::PermissionDenied) => {
            "this user may not use the engine's socket: run as root, or as a member of the \
             group that owns it, usually `docker` (`sudo usermod -aG docker USER`, then log in \
             again); the packages put the stowage user in it"
        }
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "nothing listens there: is the engine running (`systemctl status docker` or \
             `podman.socket`)?"
        }
        Some(std::io::ErrorKind::NotFound) => {
            "no socket there: is the engine running, and is --docker-host / DOCKER_HOST right?"
        }
        _ => "is the engine running, and is --docker-host / DOCKER_HOST right?",
    }
}

/// An engine address as the docker CLI reads it: `host:port` without a scheme is TCP.
fn with_scheme(host: &str) -> String {
    if host.contains("://") {
        host.to_owned()
    } else {
        format!("tcp://{host}")
    }
}

/// What an engine that cannot be reached said, in the words that matter: the OS's reason at
/// the bottom of the chain (`Permission denied (os error 13)`), not the HTTP client's layers
/// above it (`Error in the hyper legacy client: client error (Connect)`); one line.
fn innermost(e: &BollardError) -> String {
    if let BollardError::SocketNotFoundError(path) = e {
        // bollard's own words are "Socket not found: PATH".
        return format!("no socket at {path}");
    }
    let mut words = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(next) = cause {
        let text = next.to_string();
        if !text.trim().is_empty() {
            words = text;
        }
        cause = next.source();
    }
    words.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turns a bollard error into a classified failure. Server answers carry the registry's words;
/// everything that never reached the engine is an engine failure naming its address.
fn failure_from(host: &str, image: Option<&ImageRef>, error: BollardError) -> Failure {
    let class = |status, message: &str| match image {
        Some(image) => classify_about(image, status, message),
        None => crate::model::failure::classify(status, message),
    };
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Failure::new(class(Some(status_code), &message), message),
        BollardError::DockerStreamError { error } => Failure::new(class(None, &error), error),
        BollardError::RequestTimeoutError => Failure::new(
            FailureClass::Engine,
            format!("the Docker engine at {host} did not answer in time"),
        ),
        other => Failure::new(
            FailureClass::Engine,
            format!(
                "cannot talk to the Docker engine at {host}: {}",
                with_causes(&other)
            ),
        ),
    }
}

mod events;
mod lineage;
#[cfg(test)]
mod tests;

//! The narrow layer between stowage and a container engine.
//!
//! Everything the engine returns is turned into the plain data below before any decision is
//! made, so the planner never sees an API type and can be tested as a pure function. The real
//! implementation talks to the Docker Engine API ([`docker::DockerEngine`]); tests can wrap it to
//! observe what the core asks of the engine.

pub(crate) mod docker;
mod libpod;
mod transport;

use std::future::Future;

use crate::io::credentials::RegistryAuth;
use crate::model::failure::Failure;
use crate::model::image::{
    BuildCache, Deleted, Deletions, ImageStore, LocalImage, StoreEvent, StoreImage,
};
use crate::model::plain_http::EngineInsecure;
use crate::model::reference::ImageRef;

/// One pull to perform.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// What to pull.
    pub reference: ImageRef,
    /// `os/arch[/variant]`, when not the engine's own platform.
    pub platform: Option<String>,
    /// Credentials for the image's registry, when there are any.
    pub auth: Option<RegistryAuth>,
}

/// What a successful pull reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pulled {
    /// The manifest digest the registry served, when the engine said it.
    pub digest: Option<String>,
    /// Whether new content arrived (`false`: the image was already up to date).
    pub updated: bool,
}

/// Told of a pull's progress: bytes downloaded, and in all (both summed over the layers the
/// engine announced so far).
pub type OnBytes<'a> = dyn Fn(u64, u64) + Send + Sync + 'a;

/// For a pull nobody follows.
pub(crate) fn unfollowed_bytes(_: u64, _: u64) {}

/// The operations stowage needs from an engine, and no more.
pub trait Engine: Send + Sync {
    /// Every image in the local store.
    fn list_images(&self) -> impl Future<Output = Result<Vec<LocalImage>, Failure>> + Send;

    /// Pulls one image to completion, telling `bytes` what the engine reports downloaded so
    /// far and in all, summed over the layers it announced. Dropping the future abandons the
    /// pull: the connection closes and the engine cancels it.
    fn pull(
        &self,
        request: &PullRequest,
        bytes: &OnBytes<'_>,
    ) -> impl Future<Output = Result<Pulled, Failure>> + Send;

    /// Points the tag `repo:tag` at the image `source` (a name, `name@digest` or an ID).
    fn tag(
        &self,
        source: &str,
        repo: &str,
        tag: &str,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// The engine's own platform, `os/arch`: what a tag resolves to when no platform is asked.
    fn platform(&self) -> impl Future<Output = Result<String, Failure>> + Send;

    /// Whether a reference `name@digest` finds local content only once the engine itself
    /// pulled by that name. Docker's stores record a digest reference per repository at pull
    /// time (the classic store only then; the containerd store also through a tag of that
    /// repository on the content, lost when the tag moves). Podman finds a digest under any
    /// name. After a pull through a mirror, stowage pulls the origin's `name@digest` too where
    /// this is true: the content is present, so it costs a manifest HEAD at the origin, no GET
    /// and no blob (docs/mirrors in the README).
    fn names_digests_by_pull(&self) -> bool {
        true
    }

    /// The registries the engine speaks plain HTTP to, as it said when connected; `None` when
    /// it did not say (stowage then takes loopback registries as plain HTTP, as Docker does by
    /// default). See [`crate::model::plain_http`].
    fn insecure_registries(&self) -> Option<EngineInsecure> {
        None
    }
}

/// What pruning needs from an engine, beyond [`Engine`].
pub trait Store: Send + Sync {
    /// How the engine keeps images (found out when connecting).
    fn image_store(&self) -> ImageStore;

    /// What of its build cache the engine prunes (found out when connecting).
    fn build_cache(&self) -> BuildCache;

    /// How many seconds the engine's clock is ahead of this host's (negative: behind), as
    /// measured when connecting: the engine dates its containers by its own clock. Zero when
    /// it does not say.
    fn clock_ahead(&self) -> i64 {
        0
    }

    /// Every top-level image, with what the prune planner needs to know about it.
    fn store(&self) -> impl Future<Output = Result<Vec<StoreImage>, Failure>> + Send;

    /// IDs of the images that containers in any state (running, stopped, created) use.
    fn container_images(
        &self,
    ) -> impl Future<Output = Result<std::collections::HashSet<String>, Failure>> + Send;

    /// When each container that uses image `id` was created (seconds since the epoch): a
    /// container created after the image was removed did not race the removal.
    fn containers_created(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<i64>, Failure>> + Send;

    /// The image a name or an ID names now, with its names; `None` when it names none.
    fn image_named(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, Failure>> + Send;

    /// Every name the engine keeps for image `id`, where its look ([`Self::image_named`]) does
    /// not show them all: Podman's inspect hides the `name@digest` an image was pulled by,
    /// which its image list shows. One more request, only where a removal was refused.
    fn names_of(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, Failure>> + Send;

    /// One DELETE of a name or an ID, never forced, and never taking the image's parents with
    /// it: what the engine says it removed. A name or ID already gone removed nothing. The
    /// engine refuses to remove the last name of an image a container uses, and an ID that has
    /// more than one tag, and says so.
    fn delete(&self, name: &str) -> impl Future<Output = Result<Deleted, Failure>> + Send;

    /// Points the tag `name` (`host/repo:tag`) at the image `id`.
    fn retag(&self, id: &str, name: &str) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Whether the engine has the image with this ID.
    fn has_image(&self, id: &str) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Whether the engine has the image with this ID whole: its root filesystem described,
    /// so it runs, saves and pushes. Docker 28's containerd store can name an image whose layer blobs it
    /// dropped (after a delete that raced a `docker create`); it cannot show such an image's
    /// config.
    fn image_whole(&self, id: &str) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Loads an image archive (`docker load`'s input) into the engine.
    fn load(&self, archive: &std::path::Path) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Puts a removed image back: pulls `by_digest` (`name@sha256:...`) with `auth`, then points
    /// each of `tags` at it.
    fn restore(
        &self,
        by_digest: &ImageRef,
        tags: &[String],
        auth: Option<RegistryAuth>,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// The engine's data root (`DockerRootDir`, as it said when connected), whose filesystem the
    /// watermarks are about.
    fn data_root(&self)
    -> impl Future<Output = Result<Option<std::path::PathBuf>, Failure>> + Send;

    /// Prunes the build cache: records unused for longer than `max_age`, and more than
    /// `max_bytes` in all (only where [`Self::build_cache`] says so). Returns the bytes
    /// reclaimed.
    fn prune_build_cache(
        &self,
        max_age: Option<std::time::Duration>,
        max_bytes: Option<u64>,
    ) -> impl Future<Output = Result<u64, Failure>> + Send;

    /// The image ID of a container, `None` when there is no such container.
    fn container_image(
        &self,
        container: &str,
    ) -> impl Future<Output = Result<Option<String>, Failure>> + Send;

    /// The images the engine says it deleted after `since_ns` (nanoseconds) until now, as far
    /// as it remembers (Docker keeps its last 256 events; Podman's compatible API answers
    /// nothing bounded, so nothing).
    fn deleted_since(
        &self,
        since_ns: i64,
    ) -> impl Future<Output = Result<Deletions, Failure>> + Send;

    /// Container create and start events, and image deletions, from `since` (seconds) on. The
    /// stream ends when the engine's stream does; it may also go silent without ending, which
    /// the caller watches for. It borrows nothing, so a task of its own can read it.
    fn store_events(
        &self,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<StoreEvent, Failure>> + Send + 'static;
}

//! What the engine's store holds, as plain data: every engine answer is turned into these
//! before any decision sees it.

use std::collections::BTreeMap;

/// An image in the engine's local store, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalImage {
    /// The engine's image ID (`sha256:...`).
    pub id: String,
    /// Tags pointing at it, fully qualified (`docker.io/library/nginx:latest`).
    pub tags: Vec<String>,
    /// Repository digests it is known by, fully qualified (`host/repo@sha256:...`).
    pub digests: Vec<String>,
}

/// An image in the store, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreImage {
    /// Image ID.
    pub id: String,
    /// Parent image ID (locally built images have one), if any.
    pub parent: Option<String>,
    /// Fully qualified tags.
    pub tags: Vec<String>,
    /// Fully qualified repository digests (`name@sha256:...`).
    pub digests: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Size in bytes.
    pub size: u64,
    /// Creation time (seconds since the epoch), from the image config.
    pub created: i64,
}

/// The filesystem holding the engine's data root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Disk {
    /// Total bytes.
    pub total: u64,
    /// Used bytes.
    pub used: u64,
}

/// How an engine keeps its images, which decides what its names prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStore {
    /// Docker's classic (graph driver) store: an image has a repository digest only when its
    /// content came from, or went to, a registry.
    Classic,
    /// Docker's containerd image store (the default for fresh installs from Docker 29): IDs are
    /// manifest or index digests, and every tag gets a repository digest, a local build's too.
    Containerd,
    /// Podman's store behind its Docker-compatible API: likewise, a local build lists
    /// repository digests.
    Podman,
}

impl ImageStore {
    /// Whether a repository digest in the image list shows that a registry has the content.
    /// Where it does not, "local only" has to be checked with the registry.
    pub fn digests_show_a_registry_copy(self) -> bool {
        self == ImageStore::Classic
    }

    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ImageStore::Classic => "classic",
            ImageStore::Containerd => "containerd",
            ImageStore::Podman => "podman",
        }
    }
}

impl From<&StoreImage> for LocalImage {
    /// The names of a store image, as the pull side sees them (one listing serves both sides).
    fn from(image: &StoreImage) -> LocalImage {
        LocalImage {
            id: image.id.clone(),
            tags: image.tags.clone(),
            digests: image.digests.clone(),
        }
    }
}

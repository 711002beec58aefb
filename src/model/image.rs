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
    /// Those of `digests` the engine keeps as names of their own, which a removal takes by
    /// name. Docker's are all of them. Podman lists a repository digest for each repository
    /// the image is tagged in, but keeps as a name only one it was pulled by: the DELETE of any
    /// other answers "tag not known" (half of a Podman prune's DELETEs, measured).
    pub digest_names: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Size in bytes.
    pub size: u64,
    /// Creation time (seconds since the epoch), from the image config.
    pub created: i64,
    /// The build steps between it and `parent`, child-most first: untagged intermediate images
    /// of the classic builder, which no listing of top-level images shows.
    pub steps: Vec<BuildStep>,
}

impl StoreImage {
    /// The `name@digest` references a registry may serve it by: the ones it was pulled by
    /// first, where the engine says (Podman lists a repository digest for every repository
    /// the image is tagged in, those never pushed answer 404, and only a pull by digest leaves
    /// a name that says where it came from), then its other repository digests, then each
    /// digest in the repository of each of its tags that has none. The containerd store
    /// lists one repository digest an image, so an image tagged in a repository never pushed
    /// (`app:dev` beside `registry/app:1`) may be listed by that one only, and asked about
    /// only there: kept as local only, while its registry serves it.
    pub(crate) fn copy_references(&self) -> Vec<String> {
        use crate::model::reference::repository;
        let mut references = self.digest_names.clone();
        for d in &self.digests {
            if !references.contains(d) {
                references.push(d.clone());
            }
        }
        let digests: Vec<&str> = self
            .digests
            .iter()
            .filter_map(|d| d.split_once('@').map(|(_, digest)| digest))
            .collect();
        for tag in &self.tags {
            let repo = repository(tag);
            if references.iter().any(|r| repository(r) == repo) {
                continue;
            }
            for digest in &digests {
                let reference = format!("{repo}@{digest}");
                if !references.contains(&reference) {
                    references.push(reference);
                }
            }
        }
        references
    }
}

/// An intermediate image a classic build left between an image and the one it was built on.
/// The engine's DELETE, told `noprune`, leaves it; it goes with its image, unless policy keeps
/// it (its labels, a container) or it has another child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStep {
    /// Image ID.
    pub id: String,
    /// Labels (a step carries its base image's, inherited).
    pub labels: BTreeMap<String, String>,
}

/// The filesystem holding the engine's data root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Disk {
    /// Total bytes.
    pub total: u64,
    /// Used bytes.
    pub used: u64,
}

/// What of its build cache an engine prunes on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildCache {
    /// Nothing apart from images: Podman's builds leave their layers as images, pruned as
    /// such, and its API has no build cache endpoint.
    None,
    /// Records unused for a while. A bound on the cache's size needs API 1.48 (Docker 28):
    /// an older engine ignores it and, asked for nothing else, prunes every unused record.
    ByAge,
    /// Records unused for a while, and beyond a size.
    ByAgeAndSize,
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

/// What the engine said one DELETE of a name or an ID did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The names it removed (tags and `name@digest` references), fully qualified.
    pub untagged: Vec<String>,
    /// The images it deleted (`sha256:` IDs), never layers.
    pub images: Vec<String>,
}

/// An image ID with its algorithm: Podman writes IDs (its parents', its answers') as bare hex.
pub(crate) fn qualified_id(id: &str) -> String {
    if id.contains(':') {
        id.to_owned()
    } else {
        format!("sha256:{id}")
    }
}

/// The images the engine says it deleted over a span of time, as far as it remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletions {
    /// Their IDs.
    pub ids: Vec<String>,
    /// Whether the engine's record covers the whole span (Docker keeps its last 256 events;
    /// Podman's compatible API answers no bounded query).
    pub complete: bool,
}

/// Something the engine's event stream says happened to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A container was created or started from `image` (a name or an ID, as the container was
    /// created with it) at `time` (seconds).
    Used {
        image: String,
        time: i64,
        /// The same, in nanoseconds.
        time_ns: i64,
        /// Created (else started): a container the engine did not have before.
        created: bool,
    },
    /// Image `id` was deleted at `time_ns`: whatever comes back under that ID later is new.
    Gone { id: String, time_ns: i64 },
    /// An image gained a name or arrived (a tag, a pull, a load) at `time_ns`: `id` is the
    /// image's ID, or the name pulled; `name`, the name a tag gave it.
    Named {
        id: String,
        time_ns: i64,
        name: Option<String>,
    },
    /// Image `id` lost a name at `time_ns`: `name`, the name, where the engine says it (Podman;
    /// Docker names the image's ID).
    Unnamed {
        id: String,
        time_ns: i64,
        name: Option<String>,
    },
}

impl StoreEvent {
    /// When it happened (seconds).
    pub fn time(&self) -> i64 {
        match self {
            StoreEvent::Used { time, .. } => *time,
            StoreEvent::Gone { time_ns, .. }
            | StoreEvent::Named { time_ns, .. }
            | StoreEvent::Unnamed { time_ns, .. } => time_ns / 1_000_000_000,
        }
    }
}

/// The environment variable that names the image stowage itself runs from, when it runs in a
/// container the engine cannot tell it about (its mountinfo names no container).
pub(crate) const OWN_IMAGE_VAR: &str = "STOWAGE_OWN_IMAGE_ID";

/// An image ID as `docker` accepts one: the full 64 hex digits, or a prefix of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdQuery {
    /// `sha256:` and 64 hex digits.
    Full(String),
    /// `sha256:` and fewer: the one image whose ID starts so.
    Prefix(String),
}

impl IdQuery {
    /// Whether image `id` is the one meant.
    pub(crate) fn matches(&self, id: &str) -> bool {
        let id = qualified_id(id);
        match self {
            IdQuery::Full(full) => id == *full,
            IdQuery::Prefix(prefix) => id.starts_with(prefix.as_str()),
        }
    }
}

/// Reads an image ID as `docker` takes one: short or full hex, with or without `sha256:`.
/// Anything else is refused with why: a value that protects nothing must never pass silently.
/// A short ID is matched against the IDs the engine lists, never asked for by name: the engine
/// reads `61076d94d37e` as the repository `docker.io/library/61076d94d37e` first.
pub(crate) fn own_image_query(value: &str) -> Result<IdQuery, String> {
    let hex = value.strip_prefix("sha256:").unwrap_or(value);
    let valid = (4..=64).contains(&hex.len())
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(format!(
            "{OWN_IMAGE_VAR}=\"{value}\" is not an image ID (expected 4 to 64 lowercase hex \
             digits, with or without sha256:, as `docker images -q` or `docker inspect -f \
             {{{{.Id}}}}` print)"
        ));
    }
    let id = format!("sha256:{hex}");
    Ok(if hex.len() == 64 {
        IdQuery::Full(id)
    } else {
        IdQuery::Prefix(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str], digests: &[String]) -> StoreImage {
        StoreImage {
            id: "sha256:1".into(),
            parent: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            digests: digests.to_vec(),
            digest_names: digests.to_vec(),
            labels: BTreeMap::new(),
            size: 0,
            created: 0,
            steps: Vec::new(),
        }
    }

    #[test]
    fn a_registry_copy_is_asked_for_in_every_repository_the_image_is_tagged_in() {
        let d = "sha256:".to_owned() + &"1".repeat(64);
        let tagged = image(
            &[
                "r.example/a/p:1",
                "r.example/a/q:1",
                "r.example/a/q:2",
                "localhost/dev:latest",
            ],
            &[format!("r.example/a/q@{d}")],
        );
        assert_eq!(
            tagged.copy_references(),
            [
                format!("r.example/a/q@{d}"),
                format!("r.example/a/p@{d}"),
                format!("localhost/dev@{d}"),
            ]
        );
        // No digest at all (a local build): nothing to ask.
        let built = image(&["r.example/a/p:1"], &[]);
        assert!(built.copy_references().is_empty());
    }

    #[test]
    fn the_digest_an_image_was_pulled_by_is_asked_for_first() {
        let d = "sha256:".to_owned() + &"1".repeat(64);
        // Podman: a repository digest for each repository the image is tagged in; the one it
        // was pulled by is a name of its own.
        let mut podman = image(
            &["r.example/dev/a:1", "r.example/app:1"],
            &[format!("r.example/dev/a@{d}"), format!("r.example/app@{d}")],
        );
        podman.digest_names = vec![format!("r.example/app@{d}")];
        assert_eq!(
            podman.copy_references(),
            [format!("r.example/app@{d}"), format!("r.example/dev/a@{d}")]
        );
    }

    #[test]
    fn own_image_ids_are_read_as_docker_reads_them() {
        let full = "a".repeat(64);
        for v in [full.clone(), format!("sha256:{full}")] {
            assert_eq!(
                own_image_query(&v),
                Ok(IdQuery::Full(format!("sha256:{full}")))
            );
        }
        let short = own_image_query("61076d94d37e").unwrap();
        assert_eq!(short, IdQuery::Prefix("sha256:61076d94d37e".into()));
        assert!(short.matches(&format!("sha256:61076d94d37e{}", "0".repeat(52))));
        assert!(short.matches(&format!("61076d94d37e{}", "0".repeat(52))));
        assert!(!short.matches(&format!("sha256:{full}")));
        for bad in [
            "",
            "abc",
            "not-an-id",
            "ABCDEF123456",
            &"a".repeat(65),
            "sha256:xyz1",
        ] {
            let e = own_image_query(bad).unwrap_err();
            assert!(e.contains(OWN_IMAGE_VAR) && e.contains(bad), "{e}");
        }
    }
}

//! Deciding what to remove from the image store: a pure function over plain data.
//!
//! The order of the phases is the safety argument. [`protect`] first gives every image its
//! protections (required or pinned, used by a container in any state, being pulled, the
//! daemon's own, too young, kept by a rule, a parent of something kept). Only unprotected
//! images can be selected at all, by [`select`]: the age rules (dangling, unused too long),
//! then the space rules (disk watermark, store size cap), least recently used first. [`order`]
//! puts children before parents, and [`limit`] keeps at most `max_removals` per cycle, never
//! a parent whose child stays.

mod limit;
mod order;
mod protect;
mod select;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::decide::usage::Usage;
use crate::model::image::{Disk, StoreImage};
use crate::model::reference::repository;
use crate::policy::keep::{KeepRules, Limits};

/// Everything the planner looks at.
#[derive(Debug, Clone, Default)]
pub(crate) struct PruneInput {
    /// The store.
    pub images: Vec<StoreImage>,
    /// IDs of images some container (running, stopped or created) references.
    pub in_use: HashSet<String>,
    /// IDs of images required or pinned by the config.
    pub required: HashSet<String>,
    /// What is being pulled or re-tagged right now: fully qualified names, manifest digests,
    /// and the IDs of images about to be re-tagged.
    pub in_flight: HashSet<String>,
    /// The daemon's own image ID, when it runs in a container.
    pub own_image: Option<String>,
    /// Usage history.
    pub usage: Usage,
    /// The data root's filesystem, when known.
    pub disk: Option<Disk>,
    /// Now (seconds).
    pub now: i64,
    /// IDs of tagged images whose repository digests were checked with their registries and
    /// found nowhere: local only, whatever digests the engine lists. On the containerd image
    /// store and Podman a local build lists repository digests too.
    pub no_registry_copy: HashSet<String>,
}

/// Why an image stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "protection", content = "rule")]
pub enum Protection {
    /// The config requires or pins it.
    Required,
    /// A container references it.
    InUse,
    /// A pull of one of its names is under way.
    InFlight,
    /// It is the daemon's own image.
    OwnImage,
    /// First seen less than `min_age` ago.
    TooYoung,
    /// A keep rule matches (the rule, as written).
    KeepRule(String),
    /// Among the newest of its repository.
    Newest,
    /// Tagged, built here, no copy in any registry.
    LocalOnly,
    /// A kept image is built on it.
    ParentOfKept,
    /// No rule selects it.
    NotSelected,
}

impl Protection {
    /// Its name as `--json` output writes it (`in-use`, `keep-rule`, ...).
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["protection"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Why it keeps an image, in words, naming the config key behind it where there is one
    /// (the text reports; `--json` has [`Self::name`]).
    pub fn words(&self) -> String {
        match self {
            Protection::Required => "the config requires it".into(),
            Protection::InUse => "a container uses it".into(),
            Protection::InFlight => "a pull of it is under way".into(),
            Protection::OwnImage => "stowage runs from it".into(),
            Protection::TooYoung => "younger than min_age".into(),
            Protection::KeepRule(r) => format!("keep rule {r}"),
            Protection::Newest => "among the keep_newest of its repository".into(),
            Protection::LocalOnly => "built here, in no registry (prune_local_only)".into(),
            Protection::ParentOfKept => "a kept image is built on it".into(),
            Protection::NotSelected => "no rule selects it".into(),
        }
    }
}

/// Which rule selects an image for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Dangling (untagged) and older than `dangling_min_age`.
    Dangling,
    /// Unused for longer than `unused_max_age`.
    UnusedMaxAge,
    /// The disk is above the high watermark.
    DiskWatermark,
    /// The store is above `max_store_size`.
    StoreSize,
}

impl Rule {
    /// Its name as `--json` output writes it (`dangling`, `unused-max-age`, ...).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Why it selects an image, as the config key that sets it (`rule: unused_max_age`): the
    /// text reports; `--json` has [`Self::name`].
    pub fn words(self) -> &'static str {
        match self {
            Rule::Dangling => "rule: dangling_min_age",
            Rule::UnusedMaxAge => "rule: unused_max_age",
            Rule::DiskWatermark => "rule: high_watermark",
            Rule::StoreSize => "rule: max_store_size",
        }
    }
}

/// An image the cycle removes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Image ID.
    pub id: String,
    /// Its names (tags, else digests).
    pub names: Vec<String>,
    /// Every reference to it, tags and digests: each is removed by name, never forced, so an
    /// image with several names goes without `--force` (and one a container just started
    /// using is refused, not untagged).
    #[serde(skip)]
    pub references: Vec<String>,
    /// Those of its `name@digest` references the engine keeps as names, which are removed by
    /// name (see [`crate::model::image::StoreImage::digest_names`]); the others are there for
    /// pulling it back and for telling a pull of it.
    #[serde(skip)]
    pub digest_names: Vec<String>,
    /// The nearest parent image in the store: it may go only after this one is gone.
    #[serde(skip)]
    pub parent: Option<String>,
    /// Its build steps that go with it, child-most first (see [`protect::private_steps`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// When last used (or first seen, or created), seconds.
    pub last_used: i64,
    /// What `last_used` is: a use, the image's arrival, or its build time.
    pub last_used_from: UseSource,
    /// The rule that selects it.
    pub rule: Rule,
}

/// What an image's "last used" time is, as far as stowage knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UseSource {
    /// A container used it then.
    Use,
    /// It arrived then, while stowage watched, and no container has used it since.
    Arrival,
    /// It was there before stowage started watching, and no use has been seen since: its
    /// build time stands in, so the oldest go first.
    Build,
    /// It was there when stowage started watching (then), the engine does not say when it
    /// was built, and no use has been seen since.
    Watching,
}

/// An image the cycle keeps, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Image ID.
    pub id: String,
    /// Its names.
    pub names: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Why it stays.
    #[serde(flatten)]
    pub protection: Protection,
}

/// The plan of one cycle.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrunePlan {
    /// What to remove, in removal order (children before parents, LRU first).
    pub remove: Vec<Candidate>,
    /// What stays, and why.
    pub keep: Vec<Kept>,
    /// Bytes the removals are expected to free.
    pub bytes_expected: u64,
    /// Candidates left for a later cycle by `max_removals`.
    pub deferred: usize,
    /// Since when stowage has watched this store (seconds): uses before that are unknown.
    pub watching_since: i64,
    /// The `min_age` the plan applied (seconds): images seen for less are kept.
    pub min_age: i64,
    /// The figures the space rules were applied to, when any is set: what a removal by
    /// `high_watermark` or `max_store_size` is measured against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<Space>,
}

/// The disk and the store as the space rules saw them, with the limits set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Space {
    /// Percent of the engine data root's filesystem in use, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_used_percent: Option<f64>,
    /// `high_watermark`, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<f64>,
    /// `low_watermark`, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_watermark: Option<f64>,
    /// The store's images, bytes.
    pub store_bytes: u64,
    /// `max_store_size`, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_store_size: Option<u64>,
}

impl Space {
    /// The figures of `input` against `limits`; `None` when no space rule is set.
    fn of(input: &PruneInput, limits: &Limits) -> Option<Space> {
        if limits.high_watermark.is_none() && limits.max_store_size.is_none() {
            return None;
        }
        Some(Space {
            disk_used_percent: input
                .disk
                .filter(|d| d.total > 0)
                .map(|d| d.used as f64 * 100.0 / d.total as f64),
            high_watermark: limits.high_watermark,
            low_watermark: limits.low_watermark,
            store_bytes: input.images.iter().map(|i| i.size).sum(),
            max_store_size: limits.max_store_size,
        })
    }
}

/// The store's images by ID.
type ById<'a> = HashMap<&'a str, &'a StoreImage>;

/// Plans one cycle: protect, select, order, limit.
pub(crate) fn plan_prune(input: &PruneInput, keep: &KeepRules, limits: &Limits) -> PrunePlan {
    let by_id: ById = input.images.iter().map(|i| (i.id.as_str(), i)).collect();
    let protection = protect::protect(input, keep, limits, &by_id);
    let selected = select::select(input, limits, &protection, &by_id);
    let mut remove = order::order(input, &selected, &by_id);
    let shared = protect::shared_steps(&input.images);
    for c in &mut remove {
        if let Some(image) = by_id.get(c.id.as_str()) {
            c.steps = protect::private_steps(input, keep, &shared, image);
        }
    }
    let (remove, deferred) = limit::limit(input, remove, limits.max_removals);
    let removing: HashSet<&str> = remove.iter().map(|c| c.id.as_str()).collect();
    let keep_list: Vec<Kept> = input
        .images
        .iter()
        .filter(|i| !removing.contains(i.id.as_str()))
        .map(|i| Kept {
            id: i.id.clone(),
            names: names(i),
            size: i.size,
            protection: match protection.get(i.id.as_str()) {
                // Young, but no rule could ever take it: "younger than min_age" would read as
                // "removed once older".
                Some(Protection::TooYoung) if !could_select(i, limits) => Protection::NotSelected,
                Some(p) => p.clone(),
                None => Protection::NotSelected,
            },
        })
        .collect();
    PrunePlan {
        bytes_expected: remove.iter().map(|c| c.size).sum(),
        remove,
        keep: keep_list,
        deferred,
        watching_since: input.usage.watching_since,
        min_age: limits.min_age,
        space: Space::of(input, limits),
    }
}

/// Whether any rule of `limits` could select `image` at some age: the space rules any image,
/// the age rule of its kind (dangling or tagged) its own.
fn could_select(image: &StoreImage, limits: &Limits) -> bool {
    limits.high_watermark.is_some()
        || limits.max_store_size.is_some()
        || if image.tags.is_empty() {
            limits.dangling_min_age.is_some()
        } else {
            limits.unused_max_age.is_some()
        }
}

/// An image's names for reports: its tags, else its digests.
fn names(image: &StoreImage) -> Vec<String> {
    if image.tags.is_empty() {
        image.digests.clone()
    } else {
        image.tags.clone()
    }
}

/// Whether the image `id`, with these names (tags and `repository@digest`s), is part of a pull
/// or re-tag under way: the image a re-tag will name, a pull of one of its names, or of its
/// content under any name (a pull by digest from another registry or a mirror fetches the very
/// image the store already holds).
pub(crate) fn being_pulled<'a>(
    id: &str,
    mut names: impl Iterator<Item = &'a String>,
    in_flight: &HashSet<String>,
) -> bool {
    !in_flight.is_empty()
        && (in_flight.contains(id)
            || names.any(|n| {
                in_flight.contains(n)
                    || n.split_once('@')
                        .is_some_and(|(_, digest)| in_flight.contains(digest))
            }))
}

/// When stowage first saw an image (now, if never before).
fn first_seen(image: &StoreImage, input: &PruneInput) -> i64 {
    input
        .usage
        .first_seen
        .get(&image.id)
        .copied()
        .unwrap_or(input.now)
}

/// When an image was last used, as far as stowage knows, and what that time is: a recorded
/// use; else, for an image that arrived while stowage watched, its arrival; else (it was there
/// before stowage watched, a new install or a lost state file) its creation time, as docuum
/// does. Without that last fallback every such image would count as "first seen now", ties
/// broken by ID, and a size cap would remove a random set instead of the oldest.
fn last_use(image: &StoreImage, usage: &Usage) -> (i64, UseSource) {
    if let Some(used) = usage.last_used.get(&image.id) {
        return (*used, UseSource::Use);
    }
    match usage.first_seen.get(&image.id) {
        Some(&seen) if seen > usage.watching_since => (seen, UseSource::Arrival),
        // Created before it was first seen, unless the engine does not say (0) or the clock
        // that wrote it was ahead.
        Some(&seen) if image.created > 0 => (image.created.min(seen), UseSource::Build),
        Some(&seen) => (seen, UseSource::Watching),
        None => (image.created, UseSource::Build),
    }
}

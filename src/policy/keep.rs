//! Keep rules and limits of `[prune]`: what an operator wrote, compiled, with the defaults a
//! `[prune]` table without keys gets.

use std::collections::HashSet;

mod glob;

/// The keep rules an operator wrote.
#[derive(Debug, Clone, Default)]
pub struct KeepRules {
    /// Matchers on fully qualified names (globs or regexes, compiled).
    pub names: Vec<NameMatcher>,
    /// Repository digests (`sha256:...`) to keep.
    pub digests: HashSet<String>,
    /// Labels: `key` (any value) or `key=value`.
    pub labels: Vec<(String, Option<String>)>,
    /// Keep the N newest images of each repository.
    pub newest_per_repository: usize,
    /// Remove tagged images that exist nowhere else (no repository digest) too.
    pub prune_local_only: bool,
}

/// A compiled name matcher: what the operator wrote, and how it matches.
#[derive(Debug, Clone)]
pub struct NameMatcher {
    /// As written, for the plan's "kept by keep rule ..." line.
    pub written: String,
    /// The compiled expression.
    pub regex: regex::Regex,
}

/// Thresholds and limits of a cycle.
#[derive(Debug, Clone)]
pub struct Limits {
    /// No image first seen less than this long ago is removed (seconds).
    pub min_age: i64,
    /// Dangling images older than this are removed (seconds; `None`: never by age).
    pub dangling_min_age: Option<i64>,
    /// Unused tagged images not used for this long are removed (seconds; `None`: never).
    pub unused_max_age: Option<i64>,
    /// Disk use (percent of the data root's filesystem) above which LRU removal starts.
    pub high_watermark: Option<f64>,
    /// ... and the use it brings the disk back under.
    pub low_watermark: Option<f64>,
    /// Upper bound of the store's total size, bytes.
    pub max_store_size: Option<u64>,
    /// At most this many removals per cycle.
    pub max_removals: usize,
}

/// `prune.min_age` and `prune.dangling_min_age` when not set: one hour (seconds).
pub(crate) const DEFAULT_MIN_AGE: i64 = 3600;

/// `prune.max_removals` when not set.
pub(crate) const DEFAULT_MAX_REMOVALS: usize = 20;

impl Default for Limits {
    /// What an empty `[prune]` table means: dangling images older than an hour, nothing
    /// younger than an hour, at most 20 removals per cycle; no age, disk or size limit.
    fn default() -> Self {
        Limits {
            min_age: DEFAULT_MIN_AGE,
            dangling_min_age: Some(DEFAULT_MIN_AGE),
            unused_max_age: None,
            high_watermark: None,
            low_watermark: None,
            max_store_size: None,
            max_removals: DEFAULT_MAX_REMOVALS,
        }
    }
}

/// Compiles a keep pattern: `regex:...` is a regular expression over fully qualified names,
/// anything else a glob read like an image name (see [`glob`]): `alpine` keeps
/// `docker.io/library/alpine` with any tag or digest, `busybox:1.*` those tags only. In a glob
/// `*` matches within a path segment (or a tag), `**` across segments, `?` one character. Both
/// match the whole fully qualified name. The error says why a pattern can never match, and
/// what to write instead.
pub(crate) fn compile_keep(pattern: &str) -> Result<NameMatcher, String> {
    let source = match pattern.strip_prefix("regex:") {
        Some("") => {
            return Err(
                "an empty regex matches no image: write one over fully qualified \
                        names, such as \"regex:docker\\.io/library/.*:stable\""
                    .into(),
            );
        }
        Some(re) => format!("^(?:{re})$"),
        None => glob::glob_regex(pattern)?,
    };
    regex::Regex::new(&source)
        .map(|regex| NameMatcher {
            written: pattern.to_owned(),
            regex,
        })
        .map_err(|e| e.to_string())
}

/// The name of a glob written with a tag or a digest, without them (`None` for a glob without
/// either, and for a regex): `[[verify]] match` covers `registry/repository`, where a tag never
/// matches.
pub(crate) fn glob_without_tag_or_digest(pattern: &str) -> Option<&str> {
    if pattern.starts_with("regex:") {
        return None;
    }
    glob::without_tag_or_digest(pattern)
}

#[cfg(test)]
mod tests;

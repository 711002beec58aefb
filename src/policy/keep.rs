//! Keep rules and limits of `[prune]`: what an operator wrote, compiled, with the defaults a
//! `[prune]` table without keys gets.

use std::collections::HashSet;

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

/// Compiles a keep pattern: `regex:...` is a regular expression, anything else a glob where
/// `*` matches within a path segment, `**` across segments, `?` one character. Both match the
/// whole fully qualified name.
pub(crate) fn compile_keep(pattern: &str) -> Result<NameMatcher, String> {
    let source = match pattern.strip_prefix("regex:") {
        Some(re) => format!("^(?:{re})$"),
        None => {
            let mut re = String::from("^");
            let mut chars = pattern.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '*' if chars.peek() == Some(&'*') => {
                        chars.next();
                        re.push_str(".*");
                    }
                    '*' => re.push_str("[^/]*"),
                    '?' => re.push_str("[^/]"),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            re
        }
    };
    regex::Regex::new(&source)
        .map(|regex| NameMatcher {
            written: pattern.to_owned(),
            regex,
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_regexes() {
        let g = compile_keep("docker.io/library/*").unwrap();
        assert!(g.regex.is_match("docker.io/library/nginx:latest"));
        assert!(!g.regex.is_match("docker.io/library/a/b:1"));
        let gg = compile_keep("registry.example.com/**").unwrap();
        assert!(gg.regex.is_match("registry.example.com/a/b/c:1"));
        let r = compile_keep("regex:.*:stable").unwrap();
        assert!(r.regex.is_match("r/x:stable") && !r.regex.is_match("r/x:stable2"));
        assert!(compile_keep("regex:(").is_err());
    }
}

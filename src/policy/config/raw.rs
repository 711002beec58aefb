//! The config file as written: serde types that keep each value's span for messages.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) pull: RawPull,
    #[serde(default)]
    pub(super) pin: RawPin,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) registry: Vec<RawRegistry>,
    pub(super) prune: Option<RawPrune>,
    pub(super) metrics: Option<RawMetrics>,
    #[serde(default)]
    pub(super) verify: Vec<RawVerify>,
    #[serde(default)]
    pub(super) image: Vec<RawImage>,
}

/// A `[[verify]]` entry: the signature policy of the images whose name matches.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    #[serde(rename = "match")]
    pub(super) pattern: Spanned<String>,
    #[serde(default)]
    pub(super) keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) identities: Vec<Spanned<RawIdentity>>,
    pub(super) trust_root: Option<Spanned<String>>,
    pub(super) require_tlog: Option<bool>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) min_digest_age: Option<Spanned<String>>,
}

/// One keyless signer: `{ issuer = "...", subject = "..." }` or `subject_regex`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) issuer: String,
    pub(super) subject: Option<String>,
    pub(super) subject_regex: Option<String>,
}

/// An image's own `verify = { ... }`, over what a `[[verify]]` entry says.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImageVerify {
    pub(super) keys: Option<Vec<Spanned<String>>>,
    pub(super) identities: Option<Vec<Spanned<RawIdentity>>>,
    pub(super) trust_root: Option<Spanned<String>>,
    pub(super) require_tlog: Option<bool>,
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrune {
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) min_age: Option<Spanned<String>>,
    pub(super) dangling_min_age: Option<Spanned<String>>,
    pub(super) unused_max_age: Option<Spanned<String>>,
    pub(super) high_watermark: Option<Spanned<String>>,
    pub(super) low_watermark: Option<Spanned<String>>,
    pub(super) max_store_size: Option<Spanned<String>>,
    pub(super) max_removals: Option<Spanned<i64>>,
    pub(super) pause: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) keep: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) keep_digests: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) keep_labels: Vec<String>,
    pub(super) keep_newest: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) prune_local_only: bool,
    pub(super) build_cache_max_age: Option<Spanned<String>>,
    pub(super) build_cache_max_size: Option<Spanned<String>>,
    pub(super) window: Option<RawWindow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) start: Spanned<String>,
    pub(super) duration: Spanned<String>,
    pub(super) time_zone: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPin {
    pub(super) lock_file: Option<String>,
    pub(super) require_lock: Option<Spanned<bool>>,
    pub(super) check_updates: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) host: Spanned<String>,
    #[serde(default)]
    pub(super) mirrors: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) insecure: bool,
    pub(super) limit_shared_by: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPull {
    pub(super) on_boot: Option<bool>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) backoff: Option<Spanned<String>>,
    pub(super) backoff_max: Option<Spanned<String>>,
    pub(super) splay: Option<Spanned<String>>,
    pub(super) credentials: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) ready_timeout: Option<Spanned<String>>,
    pub(super) window: Option<RawWindow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImage {
    pub(super) name: Spanned<String>,
    pub(super) platform: Option<Spanned<String>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) pin: Option<Spanned<String>>,
    pub(super) verify: Option<Spanned<RawImageVerify>>,
    pub(super) min_digest_age: Option<Spanned<String>>,
}

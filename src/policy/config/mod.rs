//! The configuration file: parsed as written, then validated into [`Config`].
//!
//! Parsing keeps the byte span of every value, so a problem is reported as
//! `PATH:LINE:COL: message` quoting the bad value: what an operator (or Ansible's `validate:`)
//! needs to fix it. Validation collects every problem it finds instead of stopping at the first.

mod prune;
mod raw;
mod shape;
#[cfg(test)]
mod tests;
mod validate;
mod validator;
mod verify;
mod window;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::problem::{Problem, Problems, utf8_text};
use crate::model::reference::ImageRef;
use crate::policy::keep::{KeepRules, Limits};
use crate::policy::retry::RetryPolicy;
use crate::policy::schedule::Schedule;
use crate::policy::signature::SignaturePolicy;
use crate::policy::window::Window;

/// Where the daemon looks for its configuration unless told otherwise.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/stowage/config.toml";

/// The lock file's default name, beside the config file.
pub(crate) const DEFAULT_LOCK_FILE: &str = "stowage.lock";

/// Default refresh schedule: hourly, spread by the splay.
pub(crate) const DEFAULT_SCHEDULE: &str = "0 * * * *";

/// Where metrics are served when `[metrics]` names no address: loopback only, since the
/// endpoint has no authentication; a Prometheus on another host needs `listen` set.
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9420";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: PathBuf,
    /// How and when to pull.
    pub pull: PullSettings,
    /// The images this host must have, in the order written.
    pub images: Vec<RequiredImage>,
    /// The lock file (used when it exists).
    pub lock_file: PathBuf,
    /// Line of `pin.require_lock = true`, when set: a missing lock file is then an error, not
    /// a quiet switch to other pin modes.
    pub require_lock: Option<usize>,
    /// The state file.
    pub state_file: PathBuf,
    /// Per-registry settings: mirrors, plain HTTP.
    pub registries: Vec<RegistrySettings>,
    /// Retention rules; `None` when the file has no `[prune]` table (the daemon then never
    /// removes anything).
    pub prune: Option<PruneSettings>,
    /// Where the daemon serves Prometheus metrics; `None` without a `[metrics]` table.
    pub metrics: Option<std::net::SocketAddr>,
    /// How often the daemon asks each registry whether a pinned tag moved away from its pin
    /// (`stowage_image_update_available`); `None`: never.
    pub check_updates: Option<Duration>,
}

/// The `[prune]` table.
#[derive(Debug, Clone)]
pub struct PruneSettings {
    /// When the daemon runs a prune cycle.
    pub schedule: Schedule,
    /// The limits and thresholds of a cycle.
    pub limits: Limits,
    /// What is kept whatever the rules say.
    pub keep: KeepRules,
    /// Pause between two removals, so a cycle never starves the host.
    pub pause: Duration,
    /// Build-cache records unused for longer than this are pruned (CI hosts).
    pub build_cache_max_age: Option<Duration>,
    /// The build cache is pruned down to this size (engines with API 1.48 or later).
    pub build_cache_max_size: Option<u64>,
    /// When scheduled cycles may run (`[prune.window]`); any time when `None`. A disk over
    /// the high watermark never waits for it.
    pub(crate) window: Option<Window>,
}

/// Every cycle every half hour, at minutes 0 and 30 (spread by the splay).
pub(crate) const DEFAULT_PRUNE_SCHEDULE: &str = "*/30 * * * *";

/// Pause between removals when `prune.pause` is not set.
pub(crate) const DEFAULT_PRUNE_PAUSE: Duration = Duration::from_secs(1);

impl Default for PruneSettings {
    /// What an empty `[prune]` table means: dangling images only, after an hour, at most 20
    /// per cycle every half hour, one second apart; no build-cache pruning.
    fn default() -> Self {
        PruneSettings {
            schedule: DEFAULT_PRUNE_SCHEDULE
                .parse()
                .expect("the default prune schedule is valid"),
            limits: Limits::default(),
            keep: KeepRules::default(),
            pause: DEFAULT_PRUNE_PAUSE,
            build_cache_max_age: None,
            build_cache_max_size: None,
            window: None,
        }
    }
}

/// The `[pull]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PullSettings {
    /// Pull what is required as soon as the daemon starts.
    pub on_boot: bool,
    /// When to refresh images that have no schedule of their own.
    pub schedule: Schedule,
    /// At most this many pulls at once.
    pub concurrency: usize,
    /// Upper bound of one pull attempt, download included.
    pub timeout: Duration,
    /// How network and engine failures are retried.
    pub retry: RetryPolicy,
    /// Upper bound of this host's fixed delay after each scheduled time.
    pub splay: Duration,
    /// A Docker `config.json` to read registry credentials from, instead of the daemon user's.
    pub credentials: Option<PathBuf>,
    /// On shutdown, how long in-flight pulls may run on before they are abandoned.
    pub shutdown_grace: Duration,
    /// How long after start the daemon waits for every required image before it tells the
    /// service manager it is ready anyway (degraded); it goes on retrying what is missing.
    pub ready_timeout: Duration,
    /// When scheduled refreshes of present images may run (`[pull.window]`); any time when
    /// `None`. Pulls of missing images never wait for it.
    pub(crate) window: Option<Window>,
}

/// The pin mode an image entry asks for with `pin = "..."`. An image whose name carries a
/// digest is pinned by the name itself and takes no `pin` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinChoice {
    /// Take the digest from the lock file (`stowage pin` writes it).
    Lock,
    /// Re-resolve the tag on every run; pull only when its digest changed.
    Follow,
    /// Resolve the tag once, on the first pull, and keep that digest until the entry changes.
    FirstPull,
}

impl PinChoice {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            PinChoice::Lock => "lock",
            PinChoice::Follow => "follow",
            PinChoice::FirstPull => "first-pull",
        }
    }
}

/// A `[[registry]]` entry: how to reach one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The registry host, with its port (`docker.io`, `registry.example.com:5000`).
    pub host: String,
    /// Registries serving the same content (pull-through caches), tried first for pulls by
    /// digest: content-addressed, so whatever they serve is exactly what was pinned.
    pub mirrors: Vec<Mirror>,
    /// Plain HTTP instead of HTTPS. Loopback registries are plain HTTP without saying so, as
    /// the engine treats them.
    pub insecure: bool,
    /// Hosts that share this registry's rate limit (one account, or one NAT address): each
    /// takes that fraction of the budget left for its refreshes.
    pub limit_shared_by: u64,
}

/// A mirror of a registry: a host, and the path its copy of the registry is served under,
/// if any (a Harbor proxy-cache project: `harbor.example/dockerhub-proxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The mirror's host, with its port, as an image reference names its registry.
    pub host: String,
    /// Path components put before the origin's repository, without slashes at either end.
    pub prefix: Option<String>,
}

impl Mirror {
    /// The name the mirror serves the origin's `repository` under.
    pub fn name_of(&self, repository: &str) -> String {
        format!("{self}/{repository}")
    }
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}/{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// One `[[image]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RequiredImage {
    /// The fully qualified reference.
    pub reference: ImageRef,
    /// `os/arch[/variant]` to pull, when not the engine's own.
    pub platform: Option<String>,
    /// A schedule of its own, replacing `pull.schedule` for this image.
    pub schedule: Option<Schedule>,
    /// The pin mode written in the config, if any (see [`crate::decide::pin`] for the default).
    pub pin: Option<PinChoice>,
    /// Whose signature its digests must carry (its own `verify`, else the first `[[verify]]`
    /// entry that matches); `None`: not verified.
    pub verify: Option<SignaturePolicy>,
    /// How long the tag must name a new digest before a `follow` or `first-pull` image adopts
    /// it (its own `min_digest_age`, else the matching `[[verify]]` entry's); `None`: at once.
    pub min_digest_age: Option<std::time::Duration>,
    /// Line of the entry's `name`, for messages about it.
    pub line: usize,
    /// The name was written without a registry (`nginx`, `org/app`), which means Docker Hub:
    /// worth saying when Docker Hub does not have it or cannot be reached.
    pub hub_implied: bool,
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read and has problems.
    #[error("{}", Problems(problems))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text =
            utf8_text(path, bytes).map_err(|p| ConfigError::Invalid { problems: vec![p] })?;
        Config::parse(path, &text)
    }

    /// Reads the file at `path`: every problem of it, and the config as far as it could be
    /// read (`None` when not even its shape could be). For `check`, which goes on to the lock.
    pub fn load_all(path: &Path) -> Result<(Option<Config>, Vec<Problem>), ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        match utf8_text(path, bytes) {
            Ok(text) => Ok(validator::Validator::new(path, &text).run_all()),
            Err(p) => Ok((None, vec![p])),
        }
    }

    /// Validates `text`, reporting problems against `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validator::Validator::new(path, text).run()
    }

    /// The hosts sharing `host`'s rate limit, or `None` when its refreshes are never held
    /// back for it: they go through a mirror, which asks the origin once for the fleet.
    pub(crate) fn limit_shared_by(&self, host: &str) -> Option<u64> {
        match self.registry(host) {
            Some(r) if !r.mirrors.is_empty() => None,
            Some(r) => Some(r.limit_shared_by),
            None => Some(1),
        }
    }

    /// The settings of `host`, if it has a `[[registry]]` entry.
    pub fn registry(&self, host: &str) -> Option<&RegistrySettings> {
        self.registries.iter().find(|r| r.host == host)
    }
}

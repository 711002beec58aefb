//! The configuration file: parsed as written, then validated into [`Config`].
//!
//! Parsing keeps the byte span of every value, so a problem is reported as
//! `PATH:LINE:COL: message` quoting the bad value: what an operator (or Ansible's `validate:`)
//! needs to fix it. Validation collects every problem it finds instead of stopping at the first.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::reference::ImageRef;
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/stowage/config.toml";

/// The lock file's default name, beside the config file.
pub const DEFAULT_LOCK_FILE: &str = "stowage.lock";

/// Default refresh schedule: hourly, spread by the splay.
pub const DEFAULT_SCHEDULE: &str = "0 * * * *";

/// Where metrics are served when `[metrics]` names no address: loopback only, since the
/// endpoint has no authentication; a Prometheus on another host needs `listen` set.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9420";

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
}

/// The `[prune]` table.
#[derive(Debug, Clone)]
pub struct PruneSettings {
    /// When the daemon runs a prune cycle.
    pub schedule: Schedule,
    /// The limits and thresholds of a cycle.
    pub limits: crate::prune::Limits,
    /// What is kept whatever the rules say.
    pub keep: crate::prune::KeepRules,
    /// Pause between two removals, so a cycle never starves the host.
    pub pause: Duration,
    /// Build-cache records unused for longer than this are pruned (CI hosts).
    pub build_cache_max_age: Option<Duration>,
    /// The build cache is pruned down to this size (engines with API 1.48 or later).
    pub build_cache_max_size: Option<u64>,
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
    pub mirrors: Vec<String>,
    /// Plain HTTP instead of HTTPS. Loopback registries are plain HTTP without saying so, as
    /// the engine treats them.
    pub insecure: bool,
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
    /// The pin mode written in the config, if any (see [`crate::pin`] for the default).
    pub pin: Option<PinChoice>,
    /// Line of the entry's `name`, for messages about it.
    pub line: usize,
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
    #[error("{}", Problems(.problems))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

/// One problem at one place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
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

    /// Validates `text`, reporting problems against `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut v = Validator {
            path,
            text,
            problems: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                v.problem(span, e.message().trim_end().to_owned());
                return Err(v.into_error());
            }
        };
        let config = v.validate(raw);
        match config {
            Some(config) if v.problems.is_empty() => Ok(config),
            _ => Err(v.into_error()),
        }
    }

    /// The settings of `host`, if it has a `[[registry]]` entry.
    pub fn registry(&self, host: &str) -> Option<&RegistrySettings> {
        self.registries.iter().find(|r| r.host == host)
    }

    /// The images refreshed on `schedule` (`None`: the default `pull.schedule`).
    pub fn images_on(&self, schedule: Option<&str>) -> Vec<RequiredImage> {
        self.images
            .iter()
            .filter(|i| i.schedule.as_ref().map(Schedule::expr) == schedule)
            .cloned()
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    pull: RawPull,
    #[serde(default)]
    pin: RawPin,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    prune: Option<RawPrune>,
    metrics: Option<RawMetrics>,
    #[serde(default)]
    image: Vec<RawImage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrune {
    schedule: Option<Spanned<String>>,
    min_age: Option<Spanned<String>>,
    dangling_min_age: Option<Spanned<String>>,
    unused_max_age: Option<Spanned<String>>,
    high_watermark: Option<Spanned<String>>,
    low_watermark: Option<Spanned<String>>,
    max_store_size: Option<Spanned<String>>,
    max_removals: Option<Spanned<i64>>,
    pause: Option<Spanned<String>>,
    #[serde(default)]
    keep: Vec<Spanned<String>>,
    #[serde(default)]
    keep_digests: Vec<Spanned<String>>,
    #[serde(default)]
    keep_labels: Vec<String>,
    keep_newest: Option<Spanned<i64>>,
    #[serde(default)]
    prune_local_only: bool,
    build_cache_max_age: Option<Spanned<String>>,
    build_cache_max_size: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPin {
    lock_file: Option<String>,
    require_lock: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    host: Spanned<String>,
    #[serde(default)]
    mirrors: Vec<Spanned<String>>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPull {
    on_boot: Option<bool>,
    schedule: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
    backoff_max: Option<Spanned<String>>,
    splay: Option<Spanned<String>>,
    credentials: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    ready_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: Spanned<String>,
    platform: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    pin: Option<Spanned<String>>,
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            path: self.path.to_owned(),
            line,
            column,
            message,
        });
    }

    fn into_error(mut self) -> ConfigError {
        self.problems.sort_by_key(|p| (p.line, p.column));
        ConfigError::Invalid {
            problems: self.problems,
        }
    }

    fn duration(&mut self, key: &str, value: Option<Spanned<String>>, default: &str) -> Duration {
        let Some(value) = value else {
            return humantime::parse_duration(default).expect("defaults are valid durations");
        };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    value.span(),
                    format!(
                        "{key}: invalid duration \"{}\": {e} (write e.g. \"30s\", \"10m\", \"1h 30m\")",
                        value.get_ref()
                    ),
                );
                Duration::ZERO
            }
        }
    }

    fn integer(
        &mut self,
        key: &str,
        value: Option<Spanned<i64>>,
        range: Range<i64>,
        default: i64,
    ) -> i64 {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        if !range.contains(&n) {
            self.problem(
                value.span(),
                format!(
                    "{key}: {n} is out of range (allowed: {} to {})",
                    range.start,
                    range.end - 1
                ),
            );
            return default;
        }
        n
    }

    fn schedule(&mut self, key: &str, value: &Spanned<String>) -> Option<Schedule> {
        match value.get_ref().parse::<Schedule>() {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(
                    value.span(),
                    format!(
                        "{key}: invalid cron expression \"{}\": {e}",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn validate(&mut self, raw: RawConfig) -> Option<Config> {
        let pull = self.pull(raw.pull);
        let mut images = Vec::with_capacity(raw.image.len());
        // Where each (reference, platform) was first declared, to report duplicates.
        // A local tag points at one image, so one name cannot be required twice, not even for
        // two platforms: the second pull would take the tag from the first.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for entry in raw.image {
            let name_span = entry.name.span();
            let reference = match entry.name.get_ref().parse::<ImageRef>() {
                Ok(r) => Some(r),
                Err(e) => {
                    self.problem(
                        name_span.clone(),
                        format!(
                            "image.name: invalid image reference \"{}\": {e}",
                            entry.name.get_ref()
                        ),
                    );
                    None
                }
            };
            let platform = entry.platform.and_then(|p| {
                if valid_platform(p.get_ref()) {
                    Some(p.into_inner())
                } else {
                    self.problem(
                        p.span(),
                        format!(
                            "image.platform: invalid platform \"{}\": expected os/arch or \
                             os/arch/variant in lower case, e.g. \"linux/amd64\"",
                            p.get_ref()
                        ),
                    );
                    None
                }
            });
            let schedule = entry
                .schedule
                .as_ref()
                .and_then(|s| self.schedule("image.schedule", s));
            let pin = match entry.pin {
                None => None,
                Some(p) => match p.get_ref().as_str() {
                    "lock" => Some(PinChoice::Lock),
                    "follow" => Some(PinChoice::Follow),
                    "first-pull" => Some(PinChoice::FirstPull),
                    other => {
                        self.problem(
                            p.span(),
                            format!(
                                "image.pin: unknown pin mode \"{other}\" (expected \"lock\", \"follow\" or \"first-pull\")"
                            ),
                        );
                        None
                    }
                }
                .map(|choice| (choice, p.span())),
            };
            let Some(reference) = reference else { continue };
            // By name and tag, digest aside: `app:1` and `app:1@sha256:..` both claim the tag.
            let key = match reference.tag() {
                Some(tag) => format!("{}:{tag}", reference.name()),
                None => reference.to_string(),
            };
            let (line, _) = line_col(self.text, name_span.start);
            if let Some(first) = seen.get(&key) {
                self.problem(
                    name_span,
                    format!(
                        "image.name: \"{}\" ({reference}) is already required at line {first}",
                        entry.name.get_ref()
                    ),
                );
                continue;
            }
            if let (Some((choice, span)), Some(digest)) = (&pin, reference.digest()) {
                self.problem(
                    span.clone(),
                    format!(
                        "image.pin: \"{}\" does not apply: the name is already pinned to {digest}",
                        choice.as_str()
                    ),
                );
                continue;
            }
            seen.insert(key, line);
            images.push(RequiredImage {
                reference,
                platform,
                schedule,
                pin: pin.map(|(choice, _)| choice),
                line,
            });
        }
        let registries = self.registries(raw.registry);
        let prune = raw.prune.and_then(|p| self.prune(p));
        let metrics = raw.metrics.and_then(|m| self.metrics(m));
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let lock_file = dir.join(raw.pin.lock_file.as_deref().unwrap_or(DEFAULT_LOCK_FILE));
        let state_file = dir.join(
            raw.state
                .file
                .as_deref()
                .unwrap_or(crate::state::DEFAULT_STATE_FILE),
        );
        let require_lock = raw
            .pin
            .require_lock
            .filter(|r| *r.get_ref())
            .map(|r| line_col(self.text, r.span().start).0);
        let pull = pull?;
        Some(Config {
            source: self.path.to_owned(),
            pull,
            images,
            require_lock,
            lock_file,
            state_file,
            registries,
            prune,
            metrics,
        })
    }

    fn metrics(&mut self, raw: RawMetrics) -> Option<std::net::SocketAddr> {
        let Some(listen) = raw.listen else {
            return Some(DEFAULT_METRICS_LISTEN.parse().expect("a valid default"));
        };
        match listen.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    listen.span(),
                    format!(
                        "metrics.listen: \"{}\" is not an address and port such as \
                         \"127.0.0.1:9420\" or \"[::]:9420\"",
                        listen.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn prune(&mut self, raw: RawPrune) -> Option<PruneSettings> {
        let schedule = match &raw.schedule {
            Some(s) => self.schedule("prune.schedule", s)?,
            None => "*/30 * * * *"
                .parse()
                .expect("the default prune schedule is valid"),
        };
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let min_age = self.duration("prune.min_age", raw.min_age, "1h");
        let dangling = self.duration("prune.dangling_min_age", raw.dangling_min_age, "1h");
        let unused = raw
            .unused_max_age
            .map(|v| self.duration("prune.unused_max_age", Some(v), "0s"));
        let high = raw
            .high_watermark
            .as_ref()
            .and_then(|v| self.percent("prune.high_watermark", v));
        let low = raw
            .low_watermark
            .as_ref()
            .and_then(|v| self.percent("prune.low_watermark", v));
        let (high, low) = match (high, low, &raw.high_watermark, &raw.low_watermark) {
            (Some(h), Some(l), _, Some(span)) if l >= h => {
                self.problem(
                    span.span(),
                    format!("prune.low_watermark: {l}% must be below prune.high_watermark ({h}%)"),
                );
                (None, None)
            }
            (Some(h), None, _, None) => (Some(h), Some((h - 5.0).max(0.0))),
            (None, Some(_), None, Some(span)) => {
                self.problem(
                    span.span(),
                    "prune.low_watermark: needs prune.high_watermark".into(),
                );
                (None, None)
            }
            (h, l, _, _) => (h, l),
        };
        let max_store_size = raw
            .max_store_size
            .as_ref()
            .and_then(|v| self.size("prune.max_store_size", v));
        let build_cache_max_size = raw
            .build_cache_max_size
            .as_ref()
            .and_then(|v| self.size("prune.build_cache_max_size", v));
        let build_cache_max_age = raw
            .build_cache_max_age
            .map(|v| self.duration("prune.build_cache_max_age", Some(v), "0s"));
        let max_removals = self.integer("prune.max_removals", raw.max_removals, 1..100_001, 20);
        let keep_newest = self.integer("prune.keep_newest", raw.keep_newest, 0..1001, 0);
        let pause = self.duration("prune.pause", raw.pause, "1s");
        let mut names = Vec::new();
        for k in &raw.keep {
            match crate::prune::compile_keep(k.get_ref()) {
                Ok(m) => names.push(m),
                Err(e) => self.problem(
                    k.span(),
                    format!("prune.keep: invalid pattern \"{}\": {e}", k.get_ref()),
                ),
            }
        }
        let mut digests = std::collections::HashSet::new();
        for d in &raw.keep_digests {
            if crate::lockfile::valid_digest(d.get_ref()) {
                digests.insert(d.get_ref().clone());
            } else {
                self.problem(
                    d.span(),
                    format!("prune.keep_digests: invalid digest \"{}\" (expected sha256: and 64 hex digits)", d.get_ref()),
                );
            }
        }
        let labels = raw
            .keep_labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (l.clone(), None),
            })
            .collect();
        Some(PruneSettings {
            schedule,
            pause,
            build_cache_max_age,
            build_cache_max_size,
            limits: crate::prune::Limits {
                min_age: secs(min_age),
                dangling_min_age: Some(secs(dangling)),
                unused_max_age: unused.map(secs),
                high_watermark: high,
                low_watermark: low,
                max_store_size,
                max_removals: usize::try_from(max_removals).unwrap_or(20),
            },
            keep: crate::prune::KeepRules {
                names,
                digests,
                labels,
                newest_per_repository: usize::try_from(keep_newest).unwrap_or(0),
                prune_local_only: raw.prune_local_only,
            },
        })
    }

    fn size(&mut self, key: &str, value: &Spanned<String>) -> Option<u64> {
        match value.get_ref().parse::<bytesize::ByteSize>() {
            Ok(b) => Some(b.as_u64()),
            Err(e) => {
                self.problem(
                    value.span(),
                    format!(
                        "{key}: invalid size \"{}\": {e} (write e.g. \"50GB\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn percent(&mut self, key: &str, value: &Spanned<String>) -> Option<f64> {
        let text = value.get_ref().trim();
        match text.strip_suffix('%').unwrap_or(text).trim().parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Some(p),
            _ => {
                self.problem(
                    value.span(),
                    format!(
                        "{key}: invalid percentage \"{}\" (write e.g. \"85%\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn registries(&mut self, raw: Vec<RawRegistry>) -> Vec<RegistrySettings> {
        let mut out: Vec<RegistrySettings> = Vec::new();
        let host_of = |v: &mut Self, key: &str, value: &Spanned<String>| -> Option<String> {
            match registry_host(value.get_ref()) {
                Some(h) => Some(h),
                None => {
                    v.problem(
                        value.span(),
                        format!(
                            "{key}: invalid registry \"{}\" (expected a host with an optional port, \
                             e.g. \"registry.example.com:5000\", without scheme or path)",
                            value.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        for r in raw {
            let host = host_of(self, "registry.host", &r.host);
            let mirrors = r
                .mirrors
                .iter()
                .filter_map(|m| host_of(self, "registry.mirrors", m))
                .collect();
            let Some(host) = host else { continue };
            if out.iter().any(|o| o.host == host) {
                self.problem(
                    r.host.span(),
                    format!("registry.host: \"{host}\" is configured twice"),
                );
                continue;
            }
            out.push(RegistrySettings {
                host,
                mirrors,
                insecure: r.insecure,
            });
        }
        out
    }

    fn pull(&mut self, raw: RawPull) -> Option<PullSettings> {
        let schedule = match &raw.schedule {
            Some(s) => self.schedule("pull.schedule", s),
            None => Some(
                DEFAULT_SCHEDULE
                    .parse()
                    .expect("the default schedule is valid"),
            ),
        };
        let concurrency = self.integer("pull.concurrency", raw.concurrency, 1..65, 4);
        let retries = self.integer("pull.retries", raw.retries, 0..101, 3);
        let timeout = self.duration("pull.timeout", raw.timeout.clone(), "10m");
        if timeout.is_zero()
            && let Some(t) = &raw.timeout
            && humantime::parse_duration(t.get_ref()).is_ok()
        {
            self.problem(
                t.span(),
                format!("pull.timeout: \"{}\" must be more than zero", t.get_ref()),
            );
        }
        let backoff = self.duration("pull.backoff", raw.backoff, "1s");
        let backoff_max = self.duration("pull.backoff_max", raw.backoff_max.clone(), "1m");
        if backoff_max < backoff
            && let Some(m) = &raw.backoff_max
            && humantime::parse_duration(m.get_ref()).is_ok()
        {
            self.problem(
                m.span(),
                format!(
                    "pull.backoff_max: \"{}\" is shorter than pull.backoff ({})",
                    m.get_ref(),
                    humantime::format_duration(backoff)
                ),
            );
        }
        let splay = self.duration("pull.splay", raw.splay, "5m");
        let shutdown_grace = self.duration("pull.shutdown_grace", raw.shutdown_grace, "10s");
        let ready_timeout = self.duration("pull.ready_timeout", raw.ready_timeout, "5m");
        let credentials = raw.credentials.map(|c| {
            let p = PathBuf::from(c.into_inner());
            if p.is_relative() {
                // Relative to the config file, so config management can ship both side by side.
                self.path.parent().unwrap_or(Path::new(".")).join(p)
            } else {
                p
            }
        });
        Some(PullSettings {
            on_boot: raw.on_boot.unwrap_or(true),
            schedule: schedule?,
            concurrency: usize::try_from(concurrency).unwrap_or(4),
            timeout,
            retry: RetryPolicy {
                retries: u32::try_from(retries).unwrap_or(3),
                initial: backoff,
                max: backoff_max.max(backoff),
            },
            splay,
            credentials,
            shutdown_grace,
            ready_timeout,
        })
    }
}

/// `os/arch` or `os/arch/variant`, lower case: what the engine's `platform` parameter takes.
fn valid_platform(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// The normalised host of a registry written as `host[:port]`: what an image reference on it
/// would name as its registry. `None` for anything else (a scheme, a path, a bare word).
pub fn registry_host(s: &str) -> Option<String> {
    if s.contains('/') || s.is_empty() {
        return None;
    }
    let probe: ImageRef = format!("{s}/probe").parse().ok()?;
    let repo = probe.repository();
    (repo == "probe" || (probe.is_docker_hub() && repo == "library/probe"))
        .then(|| probe.registry().to_owned())
}

/// The content of a file that must be UTF-8 text, or a problem at its first byte that is not.
pub(crate) fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, Problem> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // Everything before `at` is valid UTF-8, by definition of `valid_up_to`.
        let valid = String::from_utf8_lossy(&bytes[..at]);
        let (line, column) = line_col(&valid, at);
        Problem {
            path: path.to_owned(),
            line,
            column,
            message: format!(
                "byte 0x{:02x} is not UTF-8 text; save the file as UTF-8",
                bytes[at]
            ),
        }
    })
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(Path::new("/etc/stowage/config.toml"), text).map_err(|e| match e {
            ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
            ConfigError::Read { .. } => unreachable!("parse never reads"),
        })
    }

    #[test]
    fn an_empty_file_is_valid_with_defaults() {
        let c = parse("").unwrap();
        assert!(c.images.is_empty());
        assert!(c.pull.on_boot);
        assert_eq!(c.pull.schedule.expr(), DEFAULT_SCHEDULE);
        assert_eq!(c.pull.concurrency, 4);
        assert_eq!(c.pull.timeout, Duration::from_secs(600));
        assert_eq!(c.pull.retry.retries, 3);
        assert_eq!(c.pull.splay, Duration::from_secs(300));
    }

    #[test]
    fn images_are_normalised_and_policies_defaulted() {
        let c = parse(
            r#"
[[image]]
name = "nginx"

[[image]]
name = "127.0.0.1:5000/app:1.2"
platform = "linux/arm64/v8"
schedule = "*/10 * * * *"

[[image]]
name = "127.0.0.1:5000/tool:3"
pin = "follow"
"#,
        )
        .unwrap();
        let names: Vec<String> = c.images.iter().map(|i| i.reference.to_string()).collect();
        assert_eq!(
            names,
            [
                "docker.io/library/nginx:latest",
                "127.0.0.1:5000/app:1.2",
                "127.0.0.1:5000/tool:3"
            ]
        );
        assert_eq!(c.images[0].pin, None);
        assert_eq!(c.images[0].line, 3);
        assert_eq!(c.images[1].pin, None);
        assert_eq!(c.images[1].platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(c.images[2].pin, Some(PinChoice::Follow));
        assert_eq!(c.images_on(None).len(), 2);
        assert_eq!(c.images_on(Some("*/10 * * * *")).len(), 1);
    }

    #[test]
    fn metrics_and_readiness_settings() {
        let c = parse("").unwrap();
        assert_eq!(c.metrics, None, "no [metrics] table: nothing listens");
        assert_eq!(c.pull.ready_timeout, Duration::from_secs(300));
        let c = parse("[pull]\nready_timeout = \"0s\"\n[metrics]\n").unwrap();
        assert_eq!(c.metrics, Some(DEFAULT_METRICS_LISTEN.parse().unwrap()));
        assert_eq!(c.pull.ready_timeout, Duration::ZERO);
        let c = parse("[metrics]\nlisten = \"[::]:9500\"\n").unwrap();
        assert_eq!(c.metrics, Some("[::]:9500".parse().unwrap()));
        let errs = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(
            errs,
            [
                "/etc/stowage/config.toml:2:10: metrics.listen: \"localhost\" is not an address and \
              port such as \"127.0.0.1:9420\" or \"[::]:9420\""
            ]
        );
        let errs = parse("[metrics]\nport = 9420\n").unwrap_err();
        assert!(
            errs[0].starts_with("/etc/stowage/config.toml:2:1:"),
            "{errs:?}"
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_location_and_value() {
        let errs = parse(
            r#"[pull]
schedule = "0 3 * *"
timeout = "ten minutes"
concurrency = 0

[[image]]
name = "Nginx"

[[image]]
name = "ok:1"
platform = "Linux"
pin = "sometimes"
"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "/etc/stowage/config.toml:2:12: pull.schedule: invalid cron expression \"0 3 * *\""
            ),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with(
                "/etc/stowage/config.toml:3:11: pull.timeout: invalid duration \"ten minutes\""
            ),
            "{}",
            errs[1]
        );
        assert!(
            errs[2]
                .starts_with("/etc/stowage/config.toml:4:15: pull.concurrency: 0 is out of range"),
            "{}",
            errs[2]
        );
        assert!(errs[3].contains(":7:8: image.name: invalid image reference \"Nginx\": repository names must be lowercase"), "{}", errs[3]);
        assert!(
            errs[4].contains(":11:12: image.platform: invalid platform \"Linux\""),
            "{}",
            errs[4]
        );
        assert!(
            errs[5].contains(":12:7: image.pin: unknown pin mode \"sometimes\""),
            "{}",
            errs[5]
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let errs = parse("[pull]\nconcurency = 3\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("/etc/stowage/config.toml:2:1: unknown field `concurency`"),
            "{}",
            errs[0]
        );
        let errs = parse("[[image]]\nname = \"a\"\ntag = \"1\"\n").unwrap_err();
        assert!(errs[0].contains(":3:1: unknown field `tag`"), "{}", errs[0]);
        let errs = parse("[puller]\n").unwrap_err();
        assert!(
            errs[0].contains(":1:2: unknown field `puller`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn syntax_and_type_errors_have_locations() {
        let errs = parse("[pull]\nconcurrency = \"four\"\n").unwrap_err();
        assert!(
            errs[0].starts_with("/etc/stowage/config.toml:2:15:"),
            "{}",
            errs[0]
        );
        let errs = parse("[pull\n").unwrap_err();
        assert!(
            errs[0].starts_with("/etc/stowage/config.toml:1:"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn duplicates_name_the_first_declaration() {
        let errs = parse(
            "[[image]]\nname = \"nginx\"\n[[image]]\nname = \"docker.io/library/nginx:latest\"\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains(":4:8:") && errs[0].contains("already required at line 2"),
            "{}",
            errs[0]
        );
        // Nor the same tag once with and once without a digest: the two would fight over it.
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let errs = parse(&format!(
            "[[image]]\nname = \"a:1\"\n[[image]]\nname = \"a:1@{d}\"\n"
        ))
        .unwrap_err();
        assert!(
            errs[0].contains("already required at line 2"),
            "{}",
            errs[0]
        );
        // Not even for two platforms: one local tag cannot point at both.
        let errs = parse("[[image]]\nname = \"a:1\"\nplatform = \"linux/amd64\"\n[[image]]\nname = \"a:1\"\nplatform = \"linux/arm64\"\n").unwrap_err();
        assert!(
            errs[0].contains("already required at line 2"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn backoff_bounds_are_checked() {
        let errs = parse("[pull]\nbackoff = \"10s\"\nbackoff_max = \"1s\"\n").unwrap_err();
        assert!(
            errs[0].contains("pull.backoff_max: \"1s\" is shorter than pull.backoff (10s)"),
            "{}",
            errs[0]
        );
        let errs = parse("[pull]\ntimeout = \"0s\"\n").unwrap_err();
        assert!(errs[0].contains("must be more than zero"), "{}", errs[0]);
    }

    #[test]
    fn registries_mirrors_and_files() {
        let c = parse(
            "[pin]\nlock_file = \"fleet.lock\"\n[state]\nfile = \"/var/tmp/s.json\"\n\
             [[registry]]\nhost = \"127.0.0.1:5101\"\nmirrors = [\"127.0.0.1:5103\"]\n\
             [[registry]]\nhost = \"index.docker.io\"\ninsecure = true\n",
        )
        .unwrap();
        assert_eq!(c.lock_file, PathBuf::from("/etc/stowage/fleet.lock"));
        assert_eq!(c.state_file, PathBuf::from("/var/tmp/s.json"));
        assert_eq!(
            c.registry("127.0.0.1:5101").unwrap().mirrors,
            ["127.0.0.1:5103"]
        );
        assert!(c.registry("docker.io").unwrap().insecure);
        assert_eq!(
            parse("").unwrap().lock_file,
            PathBuf::from("/etc/stowage/stowage.lock")
        );
        let errs =
            parse("[[registry]]\nhost = \"https://r.example\"\nmirrors = [\"m/x\"]\n").unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].contains(":2:8: registry.host: invalid registry \"https://r.example\""),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains(":3:12: registry.mirrors: invalid registry \"m/x\""),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn a_digest_name_takes_no_pin_mode() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let errs = parse(&format!("[[image]]\nname = \"a@{d}\"\npin = \"follow\"\n")).unwrap_err();
        assert!(
            errs[0].contains(":3:7: image.pin: \"follow\" does not apply"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn prune_settings() {
        let c = parse(
            "[prune]\nmin_age = \"2h\"\nunused_max_age = \"30d\"\nhigh_watermark = \"85%\"\n\
             low_watermark = \"80%\"\nmax_store_size = \"10GB\"\nkeep = [\"r/infra/*\"]\n\
             keep_labels = [\"tier=infra\", \"keep\"]\nkeep_newest = 2\n",
        )
        .unwrap();
        let p = c.prune.unwrap();
        assert_eq!(p.limits.min_age, 7200);
        assert_eq!(p.limits.unused_max_age, Some(30 * 86_400));
        assert_eq!(
            (p.limits.high_watermark, p.limits.low_watermark),
            (Some(85.0), Some(80.0))
        );
        assert_eq!(p.limits.max_store_size, Some(10_000_000_000));
        assert_eq!(
            p.keep.labels[0],
            ("tier".to_owned(), Some("infra".to_owned()))
        );
        assert_eq!(p.keep.newest_per_repository, 2);
        assert!(parse("").unwrap().prune.is_none());
        let errs = parse(
            "[prune]\nhigh_watermark = \"80%\"\nlow_watermark = \"90%\"\nkeep = [\"regex:(\"]\nmax_store_size = \"lots\"\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].contains(":3:17: prune.low_watermark: 90% must be below"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains(":4:9: prune.keep: invalid pattern \"regex:(\""),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].contains(":5:18: prune.max_store_size: invalid size \"lots\""),
            "{}",
            errs[2]
        );
    }

    #[test]
    fn relative_credentials_are_beside_the_config() {
        let c = parse("[pull]\ncredentials = \"docker/config.json\"\n").unwrap();
        assert_eq!(
            c.pull.credentials.unwrap(),
            PathBuf::from("/etc/stowage/docker/config.json")
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.images.is_empty());
    }

    #[test]
    fn text_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let path = Path::new("/etc/stowage/config.toml");
        let p = utf8_text(path, b"[pull]\nschedule = \"caf\xe9\"\n".to_vec()).unwrap_err();
        assert_eq!((p.line, p.column), (2, 16));
        assert_eq!(
            p.to_string(),
            "/etc/stowage/config.toml:2:16: byte 0xe9 is not UTF-8 text; save the file as UTF-8"
        );
        assert_eq!(utf8_text(path, "é\n".into()).unwrap(), "é\n");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("abc", 99), (1, 4));
    }

    proptest! {
        /// Whatever the input, parsing never panics, and a rejected file has at least one
        /// problem, each with a position inside the file.
        #[test]
        fn parse_never_panics(text in "[ -~\n]{0,200}") {
            if let Err(problems) = parse(&text) {
                prop_assert!(!problems.is_empty());
                let lines = text.split('\n').count();
                for p in problems {
                    let rest = p.strip_prefix("/etc/stowage/config.toml:").unwrap();
                    let mut parts = rest.splitn(3, ':');
                    let line: usize = parts.next().unwrap().parse().unwrap();
                    let column: usize = parts.next().unwrap().parse().unwrap();
                    prop_assert!(line >= 1 && line <= lines, "{p}");
                    let width = text.split('\n').nth(line - 1).unwrap().chars().count();
                    prop_assert!(column >= 1 && column <= width + 1, "{p}");
                }
            }
        }

        /// Random settings in range are accepted and come back as written.
        #[test]
        fn settings_round_trip(concurrency in 1i64..=64, retries in 0i64..=100, secs in 1u64..100_000) {
            let text = format!("[pull]\nconcurrency = {concurrency}\nretries = {retries}\ntimeout = \"{secs}s\"\n");
            let c = parse(&text).unwrap();
            prop_assert_eq!(c.pull.concurrency as i64, concurrency);
            prop_assert_eq!(i64::from(c.pull.retry.retries), retries);
            prop_assert_eq!(c.pull.timeout, Duration::from_secs(secs));
        }
    }
}

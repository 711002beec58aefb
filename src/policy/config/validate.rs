//! Validation of the raw config into [`Config`]: one method per section and per image, each
//! recording every problem it finds (with the value's location) instead of stopping at the
//! first.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawImage, RawMetrics, RawPull, RawRegistry};
use super::validator::Validator;
use super::verify::VerifyRule;
use super::{
    Config, ConfigError, DEFAULT_LOCK_FILE, DEFAULT_METRICS_LISTEN, DEFAULT_SCHEDULE, Mirror,
    PinChoice, PullSettings, RegistrySettings, RequiredImage,
};
use crate::model::problem::{Problem, line_col};
use crate::model::reference::ImageRef;
use crate::policy::retry::RetryPolicy;

impl Validator<'_> {
    /// Parses and validates the whole text: a config, or every problem found.
    pub(super) fn run(self) -> Result<Config, ConfigError> {
        match self.run_all() {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(ConfigError::Invalid { problems }),
        }
    }

    /// Parses and validates the whole text: every problem found, in file order, and the
    /// config as far as it could be read (a bad value stands at its default), which the
    /// cross-checks with the lock file need to list their problems in the same run.
    pub(super) fn run_all(mut self) -> (Option<Config>, Vec<Problem>) {
        let (raw, misfits) = super::shape::read(self.text());
        for m in misfits {
            self.problem(m.span, m.message);
        }
        // What could be read past them is validated too: one run lists every problem.
        let config = raw.and_then(|raw| self.validate(raw));
        (config, self.into_problems())
    }

    fn validate(&mut self, raw: RawConfig) -> Option<Config> {
        let pull = self.pull(raw.pull);
        let rules = self.verify_rules(raw.verify);
        let images = self.images(raw.image, &rules);
        let registries = self.registries(raw.registry);
        let prune = raw.prune.and_then(|p| self.prune(p));
        let metrics = raw.metrics.and_then(|m| self.metrics(m));
        // Absolute, so that messages name the file wherever they are read, and a config
        // given as `-c other.toml` does not read as the same `stowage.lock` as another.
        let dir = match self.path().parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let dir = dir.as_path();
        let lock_file = dir.join(raw.pin.lock_file.as_deref().unwrap_or(DEFAULT_LOCK_FILE));
        let state_file = dir.join(
            raw.state
                .file
                .as_deref()
                .unwrap_or(crate::policy::state::DEFAULT_STATE_FILE),
        );
        let require_lock = raw
            .pin
            .require_lock
            .filter(|r| *r.get_ref())
            .map(|r| line_col(self.text(), r.span().start).0);
        let check_updates = self.check_updates(raw.pin.check_updates);
        let pull = pull?;
        Some(Config {
            source: self.path().to_owned(),
            pull,
            images,
            require_lock,
            lock_file,
            state_file,
            registries,
            prune,
            metrics,
            check_updates,
        })
    }

    /// `pin.check_updates`: how often to ask each registry whether a pinned tag moved.
    fn check_updates(&mut self, raw: Option<Spanned<String>>) -> Option<Duration> {
        let raw = raw?;
        let span = raw.span();
        let parses = humantime::parse_duration(raw.get_ref()).is_ok();
        let every = self.duration("pin.check_updates", Some(raw), Duration::ZERO);
        if parses && every.is_zero() {
            self.problem(
                span,
                "pin.check_updates: must be longer than 0s (leave it out to never check)"
                    .to_owned(),
            );
        }
        (!every.is_zero()).then_some(every)
    }

    /// The `[[image]]` entries, in the order written.
    fn images(&mut self, raw: Vec<RawImage>, rules: &[VerifyRule]) -> Vec<RequiredImage> {
        // Where each (reference, platform) was first declared, to report duplicates.
        // A local tag points at one image, so one name cannot be required twice, not even for
        // two platforms: the second pull would take the tag from the first.
        let mut seen: HashMap<String, usize> = HashMap::new();
        raw.into_iter()
            .filter_map(|entry| self.image(entry, &mut seen, rules))
            .collect()
    }

    /// One `[[image]]` entry; `seen` holds the names required so far, with their lines.
    fn image(
        &mut self,
        entry: RawImage,
        seen: &mut HashMap<String, usize>,
        rules: &[VerifyRule],
    ) -> Option<RequiredImage> {
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
        let platform = entry
            .platform
            .and_then(|p| match platform_problem(p.get_ref()) {
                None => Some(p.into_inner()),
                Some(why) => {
                    self.problem(
                        p.span(),
                        format!(
                            "image.platform: invalid platform \"{}\": {why}",
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
        let pin = entry
            .pin
            .and_then(|p| Some((self.pin_choice(&p)?, p.span())));
        let reference = reference?;
        let verify = self.image_policy(&reference, entry.verify, rules);
        let min_digest_age = self.image_min_digest_age(&reference, entry.min_digest_age, rules);
        // By name and tag, digest aside: `app:1` and `app:1@sha256:..` both claim the tag.
        let key = match reference.tag() {
            Some(tag) => format!("{}:{tag}", reference.name()),
            None => reference.to_string(),
        };
        let (line, _) = line_col(self.text(), name_span.start);
        if let Some(first) = seen.get(&key) {
            self.problem(
                name_span,
                format!(
                    "image.name: {} is required twice: first at line {first}",
                    as_written(entry.name.get_ref(), &reference)
                ),
            );
            return None;
        }
        if let (Some((choice, span)), Some(digest)) = (&pin, reference.digest()) {
            self.problem(
                span.clone(),
                format!(
                    "image.pin: \"{}\" does not apply: the name is already pinned to {digest}",
                    choice.as_str()
                ),
            );
            return None;
        }
        seen.insert(key, line);
        Some(RequiredImage {
            reference,
            platform,
            schedule,
            pin: pin.map(|(choice, _)| choice),
            verify,
            min_digest_age,
            line,
            hub_implied: registry_implied(entry.name.get_ref()),
        })
    }

    fn pin_choice(&mut self, p: &Spanned<String>) -> Option<PinChoice> {
        match p.get_ref().as_str() {
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
                .filter_map(|m| match mirror(m.get_ref()) {
                    Some(m) => Some(m),
                    None => {
                        self.problem(
                            m.span(),
                            format!(
                                "registry.mirrors: invalid mirror \"{}\" (expected a host with an \
                                 optional port and path, e.g. \"mirror.example:5000\" or \
                                 \"harbor.example/dockerhub-proxy\", without scheme)",
                                m.get_ref()
                            ),
                        );
                        None
                    }
                })
                .collect();
            let Some(host) = host else { continue };
            if out.iter().any(|o| o.host == host) {
                self.problem(
                    r.host.span(),
                    format!("registry.host: \"{host}\" is configured twice"),
                );
                continue;
            }
            let limit_shared_by = self.integer(
                "registry.limit_shared_by",
                r.limit_shared_by,
                1..1_000_001,
                1,
            );
            out.push(RegistrySettings {
                host,
                mirrors,
                insecure: r.insecure,
                limit_shared_by: u64::try_from(limit_shared_by).unwrap_or(1),
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
        let timeout = self.duration(
            "pull.timeout",
            raw.timeout.clone(),
            Duration::from_secs(600),
        );
        if timeout.is_zero()
            && let Some(t) = &raw.timeout
            && humantime::parse_duration(t.get_ref()).is_ok()
        {
            self.problem(
                t.span(),
                format!("pull.timeout: \"{}\" must be more than zero", t.get_ref()),
            );
        }
        let backoff = self.duration("pull.backoff", raw.backoff, Duration::from_secs(1));
        let backoff_max = self.duration(
            "pull.backoff_max",
            raw.backoff_max.clone(),
            Duration::from_secs(60),
        );
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
        let splay = self.duration("pull.splay", raw.splay, Duration::from_secs(300));
        let shutdown_grace = self.duration(
            "pull.shutdown_grace",
            raw.shutdown_grace,
            Duration::from_secs(10),
        );
        let ready_timeout = self.duration(
            "pull.ready_timeout",
            raw.ready_timeout,
            Duration::from_secs(300),
        );
        let credentials = raw.credentials.map(|c| {
            let span = c.span();
            let p = PathBuf::from(c.into_inner());
            let p = if p.is_relative() {
                // Relative to the config file, so config management can ship both side by side.
                self.config_dir().join(p)
            } else {
                p
            };
            self.credentials_problem(span, &p);
            p
        });
        let window = match raw.window {
            Some(w) => Some(self.window("pull.window", w)?),
            None => None,
        };
        Some(PullSettings {
            window,
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
impl Validator<'_> {
    /// A `pull.credentials` file that is not there, or that the user running `check` cannot
    /// read: every pull would go anonymous, and the private images fail as "auth". The unit
    /// runs `check` as the daemon's user before it starts and reloads, so there an unreadable
    /// file stops the change; run as root, `check` reads anything.
    fn credentials_problem(&mut self, span: Range<usize>, path: &Path) {
        let why = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => "is a directory; name the config.json in it".to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            Ok(_) => match std::fs::read(path) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => format!(
                    "cannot be read by this user ({e}); make it readable by the user stowage \
                     runs as, say root:stowage with mode 0640"
                ),
                // Unread, every pull would go anonymous and fail as "auth".
                Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Err(e) => format!("is not valid JSON ({e})"),
                    Ok(_) => return,
                },
                _ => return,
            },
            _ => return,
        };
        self.problem(
            span,
            format!(
                "pull.credentials: {} {why} (a Docker config.json with the registries' logins)",
                path.display()
            ),
        );
    }
}

/// Operating systems an image index names (the OCI image spec's values: Go's `GOOS`).
const KNOWN_OS: [&str; 16] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

/// Architectures an image index names (Go's `GOARCH`).
const KNOWN_ARCH: [&str; 16] = [
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
    "ppc64le", "riscv64", "s390x", "sparc64", "wasm", "amd64p32",
];

/// What is wrong with platform `p`, if anything: `os/arch[/variant]`, with an os and an
/// architecture an index can name (a typo matches no manifest, and the pull fails on every
/// host with "no match for platform").
fn platform_problem(p: &str) -> Option<String> {
    const FORM: &str = "expected os/arch or os/arch/variant in lower case, e.g. \"linux/amd64\"";
    let parts: Vec<&str> = p.split('/').collect();
    let lower = |part: &&str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(lower) {
        return Some(FORM.into());
    }
    let unknown = |what: &str, value: &str, known: &[&str]| {
        let near = known
            .iter()
            .filter(|k| k.starts_with(value) || strsim::levenshtein(value, k) <= 1)
            .copied()
            .collect::<Vec<_>>();
        let hint = if near.is_empty() {
            format!("one of {}", known.join(", "))
        } else {
            format!("did you mean {}?", near.join(" or "))
        };
        Some(format!("unknown {what} \"{value}\": {hint}"))
    };
    if !KNOWN_OS.contains(&parts[0]) {
        return unknown("operating system", parts[0], &KNOWN_OS);
    }
    if !KNOWN_ARCH.contains(&parts[1]) {
        return unknown("architecture", parts[1], &KNOWN_ARCH);
    }
    None
}

/// A mirror written as `host[:port][/path]`: the host normalised as [`registry_host`] does,
/// and the path checked against the repository grammar. `None` for anything else.
pub(super) fn mirror(s: &str) -> Option<Mirror> {
    let (host, prefix) = match s.split_once('/') {
        Some((host, path)) => (host, Some(path.trim_end_matches('/'))),
        None => (s, None),
    };
    let host = registry_host(host)?;
    let prefix = match prefix {
        None => None,
        Some(path) => {
            // Parsed as a repository on the host, the path must come back whole: no upper
            // case, no empty component, nothing but path characters.
            let probe: ImageRef = format!("{host}/{path}/probe").parse().ok()?;
            if probe.registry() != host || probe.repository() != format!("{path}/probe") {
                return None;
            }
            Some(path.to_owned())
        }
    };
    Some(Mirror { host, prefix })
}

/// The normalised host of a registry written as `host[:port]`: what an image reference on it
/// would name as its registry. `None` for anything else (a scheme, a path, a bare word).
pub(super) fn registry_host(s: &str) -> Option<String> {
    if s.contains('/') || s.is_empty() {
        return None;
    }
    let probe: ImageRef = format!("{s}/probe").parse().ok()?;
    let repo = probe.repository();
    (repo == "probe" || (probe.is_docker_hub() && repo == "library/probe"))
        .then(|| probe.registry().to_owned())
}

/// An image name as written, and as it is read when that differs (`nginx` is
/// `docker.io/library/nginx:latest`).
fn as_written(written: &str, reference: &ImageRef) -> String {
    let read = reference.to_string();
    if written == read {
        format!("\"{written}\"")
    } else {
        format!("\"{written}\" ({read})")
    }
}

/// Whether a name as written leaves its registry out, as the docker CLI reads names: the first
/// component names a registry only when it has a `.` or a `:`, or is `localhost`.
fn registry_implied(written: &str) -> bool {
    match written.split_once('/') {
        None => true,
        Some((first, _)) => !(first.contains(['.', ':']) || first == "localhost"),
    }
}

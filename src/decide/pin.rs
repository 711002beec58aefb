//! Pin modes: which digest each required image must have, and where that digest comes from.
//!
//! | mode | the digest | registry traffic when present |
//! |---|---|---|
//! | fixed | written in the config (`name@sha256:...`) | none |
//! | lock | from the lock file `stowage pin` wrote | none |
//! | first-pull | resolved once, kept in the state file until the entry changes | none |
//! | follow | resolved on every run | one HEAD request per image |
//!
//! Defaults: a digest in the name is fixed; otherwise, when a lock file exists, lock (and every
//! such image must be in it); otherwise follow for `:latest`, first-pull for other tags.

use std::collections::HashSet;

use serde::Serialize;

use crate::model::problem::{Place, Problem};
use crate::policy::config::{Config, PinChoice, RequiredImage};
use crate::policy::lockfile::{LockFile, LockKey};
use crate::policy::state::State;

/// How an image's digest is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinMode {
    /// The config names the digest.
    Fixed,
    /// The lock file names the digest.
    Lock,
    /// The digest resolved on the first pull, kept in the state file.
    FirstPull,
    /// The tag's current digest, resolved on each run.
    Follow,
}

impl PinMode {
    /// The spelling used in plans and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Fixed => "fixed",
            PinMode::Lock => "lock",
            PinMode::FirstPull => "first-pull",
            PinMode::Follow => "follow",
        }
    }
}

/// A required image with its pin mode decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    /// The config entry.
    pub image: RequiredImage,
    /// How its digest is decided.
    pub mode: PinMode,
    /// Its key in the lock and state files.
    pub key: LockKey,
    /// The digest the config or the lock file names (fixed and lock modes).
    pub digest: Option<String>,
    /// The digest the lock entry names when it differs from `digest`: the multi-platform
    /// index, which is what `cosign sign` signs by default.
    pub subject: Option<String>,
    /// Where `digest` is written: the lock entry's line (lock), or the config's (fixed).
    pub written_at: Option<Place>,
}

impl Pinned {
    /// The digest known without asking the registry: the config's, the lock's, or the
    /// first-pull pin in `state`.
    pub fn known_digest(&self, state: &State) -> Option<String> {
        match self.mode {
            PinMode::Fixed | PinMode::Lock => self.digest.clone(),
            PinMode::FirstPull => state.first_pull(&self.key).map(str::to_owned),
            PinMode::Follow => None,
        }
    }

    /// Why `digest`, this image's pinned digest, cannot be pulled when its registry does not
    /// have it: where it is written and what makes a new pin. The tag may well exist (pushed
    /// again, its old content deleted), so "no such image" would send the operator the wrong
    /// way. None when the digest is not pinned by a file the operator can change.
    pub fn digest_gone(&self, digest: &str) -> Option<String> {
        let image = &self.image.reference;
        let registry = image.registry();
        let at = self
            .written_at
            .as_ref()
            .map(|p| format!(" at {p}"))
            .unwrap_or_default();
        match self.mode {
            PinMode::Lock => Some(format!(
                "not found: registry {registry} does not have {digest}, the digest locked for \
                 {image}{at}; run `stowage pin` to lock the tag's current digest"
            )),
            PinMode::Fixed => Some(format!(
                "not found: registry {registry} does not have {image}, the digest written{at}; \
                 write a digest it has in the name"
            )),
            PinMode::FirstPull | PinMode::Follow => None,
        }
    }

    /// Whether this run must ask the registry for the tag's digest.
    pub fn needs_resolution(&self, state: &State) -> bool {
        self.known_digest(state).is_none()
    }
}

/// Whether `stowage pin` locks this image: it has a tag, no digest, and does not ask to
/// follow or pin on first pull.
pub(crate) fn is_lockable(image: &RequiredImage) -> bool {
    image.reference.digest().is_none() && matches!(image.pin, None | Some(PinChoice::Lock))
}

/// Decides every image's pin mode against the lock file (if there is one), and checks that the
/// two agree: every lockable image has an entry, and every entry belongs to a lockable image.
/// Problems name the config line or the lock line they are about.
///
/// `host_platform` picks a lock entry's digest on a multi-platform index (for images that name
/// no platform); without it (`check`, which needs no engine) the index digest stands in.
pub(crate) fn pin_images(
    config: &Config,
    lock: Option<&LockFile>,
    host_platform: Option<&str>,
) -> Result<Vec<Pinned>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut used = HashSet::new();
    let mut pinned = Vec::with_capacity(config.images.len());
    for image in &config.images {
        let key = LockKey::new(&image.reference, image.platform.as_deref());
        match pin_mode(config, image, &key, lock, host_platform) {
            Ok((mode, digest)) => {
                let subject = match lock.and_then(|l| l.entries.get(&key)) {
                    Some(entry) if mode == PinMode::Lock => {
                        used.insert(key.clone());
                        Some(entry.digest.clone()).filter(|d| Some(d) != digest.as_ref())
                    }
                    _ => None,
                };
                let written_at = written_at(config, image, mode, &key, lock);
                pinned.push(Pinned {
                    image: image.clone(),
                    mode,
                    key,
                    digest,
                    subject,
                    written_at,
                });
            }
            Err(p) => problems.push(p),
        }
    }
    if let Some(lock) = lock {
        problems.extend(unused_lock_entries(config, lock, &used));
    }
    if problems.is_empty() {
        Ok(pinned)
    } else {
        problems.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        Err(problems)
    }
}

/// The line that names the digest of `image`, pinned in `mode`: in the lock, or in the config.
fn written_at(
    config: &Config,
    image: &RequiredImage,
    mode: PinMode,
    key: &LockKey,
    lock: Option<&LockFile>,
) -> Option<Place> {
    match mode {
        PinMode::Fixed => Some(Place {
            path: config.source.clone(),
            line: image.line,
        }),
        PinMode::Lock => lock?.lines.get(key).map(|line| Place {
            path: config.lock_file.clone(),
            line: *line,
        }),
        PinMode::FirstPull | PinMode::Follow => None,
    }
}

/// One image's pin mode and, when known now, its digest; or why the config and the lock
/// disagree about it.
fn pin_mode(
    config: &Config,
    image: &RequiredImage,
    key: &LockKey,
    lock: Option<&LockFile>,
    host_platform: Option<&str>,
) -> Result<(PinMode, Option<String>), Problem> {
    let problem = |message: String| Problem {
        path: config.source.clone(),
        line: image.line,
        column: 1,
        message,
    };
    if let Some(d) = image.reference.digest() {
        return Ok((PinMode::Fixed, Some(d.to_owned())));
    }
    match (image.pin, lock) {
        (Some(PinChoice::Follow), _) => Ok((PinMode::Follow, None)),
        (Some(PinChoice::FirstPull), _) => Ok((PinMode::FirstPull, None)),
        (None | Some(PinChoice::Lock), Some(lock)) => match lock.entries.get(key) {
            Some(entry) => {
                let platform = image.platform.as_deref().or(host_platform);
                let digest = match platform {
                    None => Some(entry.digest.clone()),
                    Some(p) => entry.digest_for(p),
                };
                // An index without this host's platform leaves the digest unknown: that image
                // fails at run time, the others go on.
                Ok((PinMode::Lock, digest))
            }
            None => Err(problem(format!(
                "{key} is not in the lock file {} ([pin] lock_file; by default stowage.lock \
                 beside the config): run `stowage pin` to update it (or set pin = \"follow\" \
                 or \"first-pull\" on this image)",
                config.lock_file.display()
            ))),
        },
        (Some(PinChoice::Lock), None) => Err(problem(format!(
            "{key} has pin = \"lock\" but there is no lock file {}: run `stowage pin`",
            config.lock_file.display()
        ))),
        (None, None) if image.reference.is_latest() => Ok((PinMode::Follow, None)),
        (None, None) => Ok((PinMode::FirstPull, None)),
    }
}

/// Lock entries no locked image of the config uses: a stale lock, reported at its lines.
fn unused_lock_entries(config: &Config, lock: &LockFile, used: &HashSet<LockKey>) -> Vec<Problem> {
    lock.lines
        .iter()
        .filter(|(key, _)| !used.contains(*key))
        .map(|(key, line)| Problem {
            path: config.lock_file.clone(),
            line: *line,
            column: 1,
            message: format!(
                "lock entry {key} is not a locked image of the config {}: run `stowage pin` \
                 to update the lock",
                config.source.display()
            ),
        })
        .collect()
}

/// Unit tests across modules build their pinned images here.
#[cfg(test)]
impl Pinned {
    /// `name` in `mode`, with no digest named by the config or a lock.
    pub(crate) fn for_tests(name: &str, mode: PinMode) -> Pinned {
        let reference: crate::model::reference::ImageRef = name.parse().expect("a valid test name");
        Pinned {
            key: LockKey::new(&reference, None),
            mode,
            digest: None,
            subject: None,
            written_at: None,
            image: RequiredImage {
                reference,
                platform: None,
                schedule: None,
                pin: None,
                verify: None,
                min_digest_age: None,
                line: 1,
                hub_implied: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn config(text: &str) -> Config {
        Config::parse(Path::new("/etc/stowage/config.toml"), text).unwrap()
    }

    fn lock(entries: &[(&str, &str, usize)]) -> LockFile {
        let mut l = LockFile::default();
        for (name, digest, line) in entries {
            let key = LockKey::new(&name.parse().unwrap(), None);
            l.entries.insert(
                key.clone(),
                crate::policy::lockfile::LockEntry::single(*digest),
            );
            l.lines.insert(key, *line);
        }
        l
    }

    #[test]
    fn defaults_without_a_lock() {
        let c = config(&format!(
            "[[image]]\nname = \"r:1/a\"\n[[image]]\nname = \"r:1/b:1\"\n[[image]]\nname = \"r:1/c@{A}\"\n[[image]]\nname = \"r:1/d:1\"\npin = \"follow\"\n"
        ));
        let modes: Vec<PinMode> = pin_images(&c, None, None)
            .unwrap()
            .iter()
            .map(|p| p.mode)
            .collect();
        assert_eq!(
            modes,
            [
                PinMode::Follow,
                PinMode::FirstPull,
                PinMode::Fixed,
                PinMode::Follow
            ]
        );
    }

    #[test]
    fn a_lock_pins_every_lockable_image() {
        let c = config(
            "[[image]]\nname = \"r:1/a\"\n[[image]]\nname = \"r:1/b:1\"\npin = \"first-pull\"\n",
        );
        let l = lock(&[("r:1/a:latest", A, 3)]);
        let p = pin_images(&c, Some(&l), None).unwrap();
        assert_eq!(p[0].mode, PinMode::Lock);
        assert_eq!(p[0].known_digest(&State::default()).as_deref(), Some(A));
        assert!(!p[0].needs_resolution(&State::default()));
        assert_eq!(p[1].mode, PinMode::FirstPull);
        assert!(p[1].needs_resolution(&State::default()));
        let mut state = State::default();
        state.first_pull.insert(p[1].key.to_string(), B.into());
        assert_eq!(p[1].known_digest(&state).as_deref(), Some(B));
    }

    #[test]
    fn a_pinned_digest_knows_the_line_it_is_written_on_and_says_so_when_gone() {
        let c = config(&format!(
            "[[image]]\nname = \"r:1/a:1\"\n[[image]]\nname = \"r:1/b@{A}\"\n[[image]]\nname = \"r:1/c:1\"\npin = \"first-pull\"\n"
        ));
        let l = lock(&[("r:1/a:1", B, 5)]);
        let p = pin_images(&c, Some(&l), None).unwrap();
        let at: Vec<Option<String>> = p
            .iter()
            .map(|p| p.written_at.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(
            at,
            [
                Some("/etc/stowage/stowage.lock:5".to_owned()),
                Some("/etc/stowage/config.toml:4".to_owned()),
                None
            ]
        );
        let locked = p[0].digest_gone(B).unwrap();
        assert!(
            locked.contains(B)
                && locked.contains("stowage.lock:5")
                && locked.contains("run `stowage pin`")
                && locked.contains("registry r:1"),
            "{locked}"
        );
        let fixed = p[1].digest_gone(A).unwrap();
        assert!(
            fixed.contains(A) && fixed.contains("config.toml:4") && !fixed.contains("stowage pin"),
            "{fixed}"
        );
        assert_eq!(p[2].digest_gone(B), None);
    }

    #[test]
    fn a_stale_lock_is_reported_at_both_ends() {
        let c = config("[[image]]\nname = \"r:1/a:1\"\n[[image]]\nname = \"r:1/new:1\"\n");
        let l = lock(&[("r:1/a:1", A, 3), ("r:1/gone:1", B, 7)]);
        let problems: Vec<String> = pin_images(&c, Some(&l), None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("/etc/stowage/config.toml:4:1: r:1/new:1 is not in the lock file /etc/stowage/stowage.lock"), "{}", problems[0]);
        assert!(
            problems[1].starts_with(
                "/etc/stowage/stowage.lock:7:1: lock entry r:1/gone:1 is not a locked image"
            ),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn an_index_entry_gives_each_host_its_platform() {
        let c = config("[[image]]\nname = \"r:1/a:1\"\n");
        let mut l = lock(&[("r:1/a:1", A, 3)]);
        let entry = l.entries.values_mut().next().unwrap();
        entry.platforms.insert("linux/amd64".into(), B.into());
        let p = pin_images(&c, Some(&l), Some("linux/amd64")).unwrap();
        assert_eq!(p[0].digest.as_deref(), Some(B));
        // No digest for this platform: that image alone fails at run time.
        let p = pin_images(&c, Some(&l), Some("linux/s390x")).unwrap();
        assert_eq!((p[0].mode, p[0].digest.as_deref()), (PinMode::Lock, None));
    }

    #[test]
    fn explicit_lock_needs_a_lock_file() {
        let c = config("[[image]]\nname = \"r:1/a:1\"\npin = \"lock\"\n");
        let problems = pin_images(&c, None, None).unwrap_err();
        assert!(problems[0].message.contains("no lock file"), "{problems:?}");
    }

    #[test]
    fn lockable_images() {
        let c = config(&format!(
            "[[image]]\nname = \"r:1/a:1\"\n[[image]]\nname = \"r:1/b@{A}\"\n[[image]]\nname = \"r:1/c:1\"\npin = \"follow\"\n[[image]]\nname = \"r:1/d:1\"\npin = \"lock\"\n"
        ));
        let lockable: Vec<bool> = c.images.iter().map(is_lockable).collect();
        assert_eq!(lockable, [true, false, false, true]);
    }
}

//! The documents of the commands about files rather than the store: `check --json` and
//! `pin --json`.

use std::path::Path;

use serde::Serialize;

use super::JSON_VERSION;
use crate::model::failure::FailureClass;
use crate::model::problem::Problem;
use crate::policy::config::ConfigError;
use crate::policy::lockfile::{LockChange, LockKey};
use crate::service::session::Loaded;

/// One problem of a file, located. `line` and `column` are null for a file that cannot be
/// read at all.
#[derive(Serialize)]
struct Located<'a> {
    #[serde(serialize_with = "super::lossy_path")]
    path: &'a Path,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
}

impl<'a> From<&'a Problem> for Located<'a> {
    fn from(p: &'a Problem) -> Self {
        Located {
            path: &p.path,
            line: Some(p.line),
            column: Some(p.column),
            message: p.message.clone(),
        }
    }
}

/// The `check --json` document: valid or not, what the files hold, and every problem.
pub(in crate::cli) fn check_json(config: &Path, loaded: &Result<Loaded, ConfigError>) -> String {
    #[derive(Serialize)]
    struct Lock<'a> {
        #[serde(serialize_with = "super::lossy_path")]
        path: &'a Path,
        entries: usize,
    }
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        #[serde(serialize_with = "super::lossy_path")]
        config: &'a Path,
        valid: bool,
        /// The required images; null when the config is not valid.
        images: Option<usize>,
        /// The lock file; null when there is none, or the config is not valid.
        lock: Option<Lock<'a>>,
        problems: Vec<Located<'a>>,
    }
    let (images, lock, problems) = match loaded {
        Ok(Loaded { config, lock }) => (
            Some(config.images.len()),
            lock.as_ref().map(|l| Lock {
                path: &config.lock_file,
                entries: l.entries.len(),
            }),
            Vec::new(),
        ),
        Err(ConfigError::Invalid { problems }) => {
            (None, None, problems.iter().map(Located::from).collect())
        }
        Err(ConfigError::Read { path, source }) => {
            let located = Located {
                path,
                line: None,
                column: None,
                message: format!("cannot read the configuration: {source}"),
            };
            (None, None, vec![located])
        }
    };
    let doc = Doc {
        version: JSON_VERSION,
        config,
        valid: loaded.is_ok(),
        images,
        lock,
        problems,
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

/// One change between the lock file and the registries, as `pin --json` lists it.
#[derive(Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
enum Change<'a> {
    /// The lock lacks the image: the registry's digest for it.
    Added { image: &'a LockKey, digest: &'a str },
    /// The lock has an image the config does not require: the digest it locks.
    Removed { image: &'a LockKey, digest: &'a str },
    /// The tag moved: the locked digest and the registry's.
    Moved {
        image: &'a LockKey,
        locked: &'a str,
        registry: &'a str,
    },
    /// The same digest, verified with another key or no longer at all.
    Signature {
        image: &'a LockKey,
        locked_signed_by: Option<&'a str>,
        signed_by: Option<&'a str>,
    },
}

impl<'a> From<&'a LockChange> for Change<'a> {
    fn from(c: &'a LockChange) -> Self {
        match c {
            LockChange::Added(image, digest) => Change::Added { image, digest },
            LockChange::Removed(image, digest) => Change::Removed { image, digest },
            LockChange::Changed(image, locked, registry) => Change::Moved {
                image,
                locked,
                registry,
            },
            LockChange::Signature(image, old, new) => Change::Signature {
                image,
                locked_signed_by: old.as_deref(),
                signed_by: new.as_deref(),
            },
        }
    }
}

impl Serialize for LockKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An image `pin` could not resolve or verify: nothing is written then.
#[derive(Serialize)]
pub(in crate::cli) struct PinFailure {
    /// The image, as the lock keys it.
    pub image: String,
    pub class: FailureClass,
    /// What happened and what to do, in a sentence.
    pub message: String,
    /// The registry client's own words.
    pub detail: String,
}

/// What `pin` came to.
#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(in crate::cli) enum PinResult {
    /// The lock holds what the registries say.
    UpToDate,
    /// The lock was written with the changes.
    Written,
    /// `--check`: the lock does not hold (changes listed), or there is none.
    Stale,
    /// Some images could not be resolved or verified: nothing written.
    Failed,
}

/// The `pin --json` document.
pub(in crate::cli) fn pin_json(
    lock_file: &Path,
    check: bool,
    result: PinResult,
    changes: &[LockChange],
    failures: &[PinFailure],
) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        #[serde(serialize_with = "super::lossy_path")]
        lock_file: &'a Path,
        check: bool,
        result: PinResult,
        changes: Vec<Change<'a>>,
        failures: &'a [PinFailure],
    }
    let doc = Doc {
        version: JSON_VERSION,
        lock_file,
        check,
        result,
        changes: changes.iter().map(Change::from).collect(),
        failures,
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

//! The lock file: the digest every host must run for each locked image.
//!
//! `stowage pin` writes it; config management commits it and ships it beside the config, so a
//! whole fleet converges on the same content whatever the tags do meanwhile. It is TOML, sorted
//! by name and platform, one table per image, so a change reads well in a diff.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::model::problem::{Problem, line_col};
use crate::model::reference::ImageRef;
use crate::model::reference::valid_digest;
use crate::model::signature::Signer;

/// The format version this build reads and writes.
pub(crate) const LOCK_VERSION: i64 = 1;

/// What a lock entry is keyed by: the image as written in the config (fully qualified, by tag)
/// and its platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey {
    /// Fully qualified reference with its tag.
    pub name: String,
    /// `os/arch[/variant]`, when the config names one.
    pub platform: Option<String>,
}

impl LockKey {
    /// The key for a reference and platform.
    pub fn new(reference: &ImageRef, platform: Option<&str>) -> LockKey {
        LockKey {
            name: reference.to_string(),
            platform: platform.map(str::to_owned),
        }
    }
}

impl std::fmt::Display for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.platform {
            Some(p) => write!(f, "{} [{p}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What the lock says about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    /// The digest the tag named: a manifest, or a multi-platform index. The same on every host.
    pub digest: String,
    /// For an index: each platform's manifest digest, so every host pulls its own platform's
    /// content by digest without asking the registry. Empty for a single manifest.
    pub platforms: BTreeMap<String, String>,
    /// The fingerprint (`sha256:` of the public key) whose cosign signature of `digest` was
    /// verified when the lock was written; `None` when the image has no signature policy (or
    /// one that only warns, and the digest was not signed).
    pub signed_by: Option<String>,
}

impl LockEntry {
    /// A single-manifest entry.
    pub fn single(digest: impl Into<String>) -> LockEntry {
        LockEntry {
            digest: digest.into(),
            platforms: BTreeMap::new(),
            signed_by: None,
        }
    }

    /// The manifest digest to pull on `platform`: the index's entry for it, or the digest
    /// itself for a single manifest. `None` when an index has nothing for that platform.
    pub fn digest_for(&self, platform: &str) -> Option<String> {
        if self.platforms.is_empty() {
            Some(self.digest.clone())
        } else {
            crate::model::platform::choose_platform(&self.platforms, platform)
        }
    }
}

/// A parsed lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    /// What each locked image must be.
    pub entries: BTreeMap<LockKey, LockEntry>,
    /// The line each entry's `name` is on, for messages about stale entries.
    pub lines: BTreeMap<LockKey, usize>,
}

/// One difference between two lock files, for `pin --check` and for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    /// An image the new lock has and the old one does not.
    Added(LockKey, String),
    /// An image the old lock has and the new one does not.
    Removed(LockKey, String),
    /// The digest (or an index's platforms) changed: old, new.
    Changed(LockKey, String, String),
    /// The same digest, verified with another key or no longer at all: the fingerprints the
    /// old and the new lock record.
    Signature(LockKey, Option<String>, Option<String>),
}

impl std::fmt::Display for LockChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The words are `pin --json`'s kinds of change: added, removed, moved, signature.
            LockChange::Added(k, d) => write!(f, "added: {k} at {d}, the registry's digest"),
            LockChange::Removed(k, d) => {
                write!(f, "removed: {k} (locked at {d}), no longer required")
            }
            LockChange::Changed(k, old, new) => {
                write!(f, "moved: {k} is locked at {old}, the registry has {new}")
            }
            LockChange::Signature(k, old, new) => {
                let by = |f: &Option<String>| match f {
                    Some(fp) => format!("signed by {fp}"),
                    None => "not verified".to_owned(),
                };
                write!(
                    f,
                    "signature: {k} is locked as {}, and is now {}",
                    by(old),
                    by(new)
                )
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: Spanned<i64>,
    #[serde(default)]
    image: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Spanned<String>,
    platform: Option<String>,
    digest: Spanned<String>,
    #[serde(default)]
    platforms: BTreeMap<String, Spanned<String>>,
    signed_by: Option<Spanned<String>>,
}

/// A lock file's text, for locating problems in it.
struct Located<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Located<'_> {
    fn problem(&self, span: std::ops::Range<usize>, message: String) -> Problem {
        let (line, column) = line_col(self.text, span.start);
        Problem {
            path: PathBuf::from(self.path),
            line,
            column,
            message,
        }
    }

    /// One `[[image]]` entry: its key, its line and what it locks; or its problems. `lock` holds
    /// the entries read so far, for duplicates.
    fn entry(
        &self,
        entry: RawEntry,
        lock: &LockFile,
    ) -> Result<(LockKey, usize, LockEntry), Vec<Problem>> {
        let name = &entry.name;
        let key = match name.get_ref().parse::<ImageRef>() {
            Ok(r) if r.digest().is_none() => LockKey::new(&r, entry.platform.as_deref()),
            Ok(_) => {
                let message = format!(
                    "image.name: \"{}\" must be a tag, not a digest",
                    name.get_ref()
                );
                return Err(vec![self.problem(name.span(), message)]);
            }
            Err(e) => {
                let message = format!(
                    "image.name: invalid image reference \"{}\": {e}",
                    name.get_ref()
                );
                return Err(vec![self.problem(name.span(), message)]);
            }
        };
        // A key fingerprint is written like a digest: sha256: and 64 hex digits; an identity
        // as `SUBJECT (issuer ISSUER)`.
        let identity = |d: &str| !d.starts_with("sha256:") && Signer::parse(d).is_some();
        let bad: Vec<Problem> = std::iter::once(("image.digest", &entry.digest))
            .chain(entry.platforms.values().map(|d| ("image.digest", d)))
            .chain(entry.signed_by.iter().map(|f| ("image.signed_by", f)))
            .filter(|(field, d)| {
                let signer = *field == "image.signed_by" && identity(d.get_ref());
                !(valid_digest(d.get_ref()) || signer)
            })
            .map(|(field, d)| {
                let (what, expected) = if field == "image.signed_by" {
                    (
                        "signer",
                        "a key fingerprint, sha256: and 64 lower-case hex digits, or an \
                         identity, SUBJECT (issuer ISSUER)",
                    )
                } else {
                    ("digest", "sha256: and 64 lower-case hex digits")
                };
                self.problem(
                    d.span(),
                    format!(
                        "{field}: invalid {what} \"{}\" (expected {expected})",
                        d.get_ref()
                    ),
                )
            })
            .collect();
        if !bad.is_empty() {
            return Err(bad);
        }
        let (line, _) = line_col(self.text, name.span().start);
        if let Some(first) = lock.lines.get(&key) {
            let message = format!("image.name: {key} is already locked at line {first}");
            return Err(vec![self.problem(name.span(), message)]);
        }
        let locked = LockEntry {
            digest: entry.digest.into_inner(),
            platforms: entry
                .platforms
                .into_iter()
                .map(|(p, d)| (p, d.into_inner()))
                .collect(),
            signed_by: entry.signed_by.map(Spanned::into_inner),
        };
        Ok((key, line, locked))
    }
}

impl LockFile {
    /// Reads the lock at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<LockFile>, Vec<Problem>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = crate::model::problem::utf8_text(path, bytes).map_err(|p| vec![p])?;
                LockFile::parse(path, &text).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(vec![Problem {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: format!("cannot read the lock file: {e}"),
            }]),
        }
    }

    /// Parses lock file text, reporting every problem against `path`.
    pub fn parse(path: &Path, text: &str) -> Result<LockFile, Vec<Problem>> {
        let at = Located { path, text };
        let raw: RawLock = toml::from_str(text).map_err(|e| {
            vec![at.problem(e.span().unwrap_or(0..0), e.message().trim_end().to_owned())]
        })?;
        let mut problems = Vec::new();
        if *raw.version.get_ref() != LOCK_VERSION {
            problems.push(at.problem(
                raw.version.span(),
                format!(
                    "version: this stowage reads lock files of version {LOCK_VERSION}, not {}",
                    raw.version.get_ref()
                ),
            ));
        }
        let mut lock = LockFile::default();
        for entry in raw.image {
            match at.entry(entry, &lock) {
                Ok((key, line, entry)) => {
                    lock.lines.insert(key.clone(), line);
                    lock.entries.insert(key, entry);
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(lock)
        } else {
            Err(problems)
        }
    }

    /// The file's text: a header, the version, then the entries in key order.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# stowage lock file, written by `stowage pin`. Commit it and ship it beside the\n\
             # config: every host pulls exactly these digests. Do not edit by hand.\n",
        );
        let _ = writeln!(out, "version = {LOCK_VERSION}");
        for (key, entry) in &self.entries {
            let _ = write!(out, "\n[[image]]\nname = {}\n", toml_string(&key.name));
            if let Some(p) = &key.platform {
                let _ = writeln!(out, "platform = {}", toml_string(p));
            }
            let _ = writeln!(out, "digest = {}", toml_string(&entry.digest));
            if let Some(by) = &entry.signed_by {
                let _ = writeln!(out, "signed_by = {}", toml_string(by));
            }
            if !entry.platforms.is_empty() {
                // A sub-table, one platform per line: diffs show which platform moved.
                let _ = writeln!(out, "[image.platforms]");
                for (p, d) in &entry.platforms {
                    let _ = writeln!(out, "{} = {}", toml_string(p), toml_string(d));
                }
            }
        }
        out
    }

    /// Writes the lock atomically (see [`crate::policy::atomic_file`]).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::policy::atomic_file::write(path, self.render().as_bytes())
    }

    /// What changes from `self` to `new`, in key order.
    pub fn changes_to(&self, new: &LockFile) -> Vec<LockChange> {
        let mut changes = Vec::new();
        for (key, entry) in &new.entries {
            match self.entries.get(key) {
                None => changes.push(LockChange::Added(key.clone(), entry.digest.clone())),
                Some(old) if (&old.digest, &old.platforms) != (&entry.digest, &entry.platforms) => {
                    changes.push(LockChange::Changed(
                        key.clone(),
                        old.digest.clone(),
                        entry.digest.clone(),
                    ))
                }
                Some(old) if old.signed_by != entry.signed_by => {
                    changes.push(LockChange::Signature(
                        key.clone(),
                        old.signed_by.clone(),
                        entry.signed_by.clone(),
                    ))
                }
                Some(_) => {}
            }
        }
        for (key, entry) in &self.entries {
            if !new.entries.contains_key(key) {
                changes.push(LockChange::Removed(key.clone(), entry.digest.clone()));
            }
        }
        changes.sort_by(|a, b| change_key(a).cmp(change_key(b)));
        changes
    }
}

fn change_key(c: &LockChange) -> &LockKey {
    match c {
        LockChange::Added(k, _)
        | LockChange::Removed(k, _)
        | LockChange::Changed(k, _, _)
        | LockChange::Signature(k, _, _) => k,
    }
}

/// A TOML basic string (quotes and backslashes escaped), via the toml crate's own writer.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn key(name: &str, platform: Option<&str>) -> LockKey {
        LockKey::new(&name.parse().unwrap(), platform)
    }

    fn lock(entries: &[(&str, Option<&str>, &str)]) -> LockFile {
        let mut l = LockFile::default();
        for (n, p, d) in entries {
            l.entries.insert(key(n, *p), LockEntry::single(*d));
        }
        l
    }

    #[test]
    fn renders_sorted_and_parses_back() {
        let mut l = lock(&[
            ("r:1/b:1", None, B),
            ("r:1/a:1", Some("linux/arm64"), A),
            ("r:1/a:1", None, A),
        ]);
        let index = l.entries.get_mut(&key("r:1/b:1", None)).unwrap();
        index.platforms.insert("linux/amd64".into(), A.into());
        index.platforms.insert("linux/arm64/v8".into(), B.into());
        let text = l.render();
        assert!(
            text.contains(&format!(
                "[image.platforms]\n\"linux/amd64\" = \"{A}\"\n\"linux/arm64/v8\" = \"{B}\"\n"
            )),
            "{text}"
        );
        let names: Vec<&str> = text.lines().filter(|l| l.starts_with("name")).collect();
        assert_eq!(
            names,
            [
                "name = \"r:1/a:1\"",
                "name = \"r:1/a:1\"",
                "name = \"r:1/b:1\""
            ]
        );
        assert!(text.contains("platform = \"linux/arm64\""));
        let back = LockFile::parse(Path::new("x.lock"), &text).unwrap();
        assert_eq!(back.entries, l.entries);
        // Rendering is deterministic: the same lock gives the same bytes.
        assert_eq!(back.render(), text);
    }

    #[test]
    fn names_are_normalised_so_short_and_long_forms_match() {
        let text = format!("version = 1\n[[image]]\nname = \"nginx\"\ndigest = \"{A}\"\n");
        let l = LockFile::parse(Path::new("x.lock"), &text).unwrap();
        assert!(
            l.entries
                .contains_key(&key("docker.io/library/nginx:latest", None))
        );
    }

    #[test]
    fn problems_have_locations() {
        let text = "version = 2\n[[image]]\nname = \"Bad\"\ndigest = \"sha256:abc\"\n[[image]]\nname = \"ok:1\"\ndigest = \"md5:1\"\n";
        let problems = LockFile::parse(Path::new("/etc/stowage/stowage.lock"), text).unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("/etc/stowage/stowage.lock:1:11: version"),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].starts_with(
                "/etc/stowage/stowage.lock:3:8: image.name: invalid image reference \"Bad\""
            ),
            "{}",
            shown[1]
        );
        assert!(
            shown[2].starts_with(
                "/etc/stowage/stowage.lock:7:10: image.digest: invalid digest \"md5:1\""
            ),
            "{}",
            shown[2]
        );
        let dup = format!(
            "version = 1\n[[image]]\nname = \"a:1\"\ndigest = \"{A}\"\n[[image]]\nname = \"a:1\"\ndigest = \"{B}\"\n"
        );
        let problems = LockFile::parse(Path::new("l"), &dup).unwrap_err();
        assert!(problems[0].to_string().contains("already locked at line 3"));
    }

    #[test]
    fn changes_are_listed_in_order() {
        let old = lock(&[("r:1/a:1", None, A), ("r:1/b:1", None, A)]);
        let new = lock(&[("r:1/a:1", None, B), ("r:1/c:1", None, A)]);
        let changes = old.changes_to(&new);
        assert_eq!(
            changes,
            [
                LockChange::Changed(key("r:1/a:1", None), A.into(), B.into()),
                LockChange::Removed(key("r:1/b:1", None), A.into()),
                LockChange::Added(key("r:1/c:1", None), A.into()),
            ]
        );
        assert!(old.changes_to(&old).is_empty());
    }

    #[test]
    fn each_platform_takes_its_own_digest() {
        let mut e = LockEntry::single(A);
        assert_eq!(e.digest_for("linux/s390x").as_deref(), Some(A));
        e.platforms.insert("linux/amd64".into(), B.into());
        assert_eq!(e.digest_for("linux/amd64").as_deref(), Some(B));
        assert_eq!(e.digest_for("linux/s390x"), None);
    }

    #[test]
    fn missing_file_is_no_lock() {
        assert_eq!(
            LockFile::load(Path::new("/nonexistent/stowage.lock")).unwrap(),
            None
        );
    }

    proptest! {
        #[test]
        fn any_lock_round_trips(entries in prop::collection::btree_map(
            ("[a-z]{1,6}", prop::option::of(prop::sample::select(vec!["linux/amd64", "linux/arm64/v8"]))),
            "[0-9a-f]{64}",
            0..20,
        )) {
            let mut l = LockFile::default();
            for ((repo, platform), hex) in &entries {
                l.entries.insert(key(&format!("r:5/{repo}:1"), *platform), LockEntry::single(format!("sha256:{hex}")));
            }
            let back = LockFile::parse(Path::new("x"), &l.render()).unwrap();
            prop_assert_eq!(&back.entries, &l.entries);
            prop_assert!(back.changes_to(&l).is_empty());
        }
    }

    #[test]
    fn the_signing_key_is_recorded_and_a_change_of_it_is_a_change() {
        let mut lock = LockFile::default();
        let k = key("r:1/a:1", None);
        let mut entry = LockEntry::single(A);
        entry.signed_by = Some(B.to_owned());
        lock.entries.insert(k.clone(), entry);
        let text = lock.render();
        assert!(text.contains(&format!("signed_by = \"{B}\"")), "{text}");
        let back = LockFile::parse(Path::new("x.lock"), &text).unwrap();
        assert_eq!(back.entries, lock.entries);
        let mut unsigned = back.clone();
        unsigned.entries.get_mut(&k).unwrap().signed_by = None;
        assert_eq!(
            back.changes_to(&unsigned),
            [LockChange::Signature(k, Some(B.to_owned()), None)]
        );
        let bad = text.replace(B, "sha256:nope");
        let problems = LockFile::parse(Path::new("x.lock"), &bad).unwrap_err();
        assert!(
            problems[0]
                .to_string()
                .contains("image.signed_by: invalid signer \"sha256:nope\""),
            "{problems:?}"
        );
    }
}

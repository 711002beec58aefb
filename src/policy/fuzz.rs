//! Fuzzing of everything that reads operator input: the config parser and validator, the lock
//! file parser and the image reference parser. Grammar-aware generation (real sections, keys and
//! plausible or broken values) with mutations on top (inserted, deleted and swapped bytes, and
//! bytes that are not UTF-8), driven by proptest on stable Rust.
//!
//! Bounded in `cargo test` (proptest's default 256 cases per property); run it longer with
//! `PROPTEST_CASES=100000 cargo test --lib fuzz::`. Properties: nothing panics, and every error
//! names the file, a line and column inside it, and says something.

use std::path::Path;

use proptest::prelude::*;

use crate::model::problem::{Problem, utf8_text};
use crate::model::reference::ImageRef;
use crate::policy::config::{Config, ConfigError};
use crate::policy::lockfile::LockFile;

const CONFIG: &str = "/etc/stowage/config.toml";
const LOCK: &str = "/etc/stowage/stowage.lock";

/// Values an operator might write, well or badly.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("4".to_owned()),
        Just("\"5m\"".to_owned()),
        Just("\"5x\"".to_owned()),
        Just("\"85%\"".to_owned()),
        Just("\"120%\"".to_owned()),
        Just("\"50GB\"".to_owned()),
        Just("\"0 * * * *\"".to_owned()),
        Just("\"*/2 * * * * *\"".to_owned()),
        Just("\"61 * * * *\"".to_owned()),
        Just("\"linux/arm64\"".to_owned()),
        Just("\"follow\"".to_owned()),
        Just("\"lock\"".to_owned()),
        Just("\"127.0.0.1:9420\"".to_owned()),
        Just("\"127.0.0.1:5101/app:1\"".to_owned()),
        Just("\"nginx\"".to_owned()),
        Just("\"UPPER/case\"".to_owned()),
        Just("\"a@sha256:zz\"".to_owned()),
        Just(format!("\"r:1/a:1@sha256:{}\"", "0".repeat(64))),
        Just("[\"r/**\", \"regex:(\"]".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        "\"[ -~]{0,12}\"",
        "\"\\PC{0,6}\"",
    ]
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "on_boot",
        "schedule",
        "splay",
        "concurrency",
        "timeout",
        "retries",
        "backoff",
        "backoff_max",
        "shutdown_grace",
        "ready_timeout",
        "credentials",
        "lock_file",
        "file",
        "require_lock",
        "min_age",
        "dangling_min_age",
        "unused_max_age",
        "high_watermark",
        "low_watermark",
        "max_store_size",
        "max_removals",
        "pause",
        "keep",
        "keep_digests",
        "keep_labels",
        "keep_newest",
        "prune_local_only",
        "start",
        "duration",
        "time_zone",
        "host",
        "mirrors",
        "insecure",
        "listen",
        "name",
        "pin",
        "platform",
        "bogus",
    ])
}

fn header() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "[pull]",
        "[pin]",
        "[state]",
        "[prune]",
        "[pull.window]",
        "[prune.window]",
        "[metrics]",
        "[[registry]]",
        "[[image]]",
        "[[image]]",
        "[image]",
        "[nope]",
        "",
    ])
}

/// A config-shaped document: sections of `key = value` lines.
fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (header(), prop::collection::vec((key(), value()), 0..5)),
        0..6,
    )
    .prop_map(|sections| {
        let mut text = String::new();
        for (header, lines) in sections {
            text.push_str(header);
            text.push('\n');
            for (k, v) in lines {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text
    })
}

/// A lock-shaped document.
fn lock_document() -> impl Strategy<Value = String> {
    let digest = prop_oneof![
        Just(format!("sha256:{}", "a".repeat(64))),
        Just("sha256:short".to_owned()),
        Just("md5:abc".to_owned()),
        "[ -~]{0,10}",
    ];
    let entry = (
        value(),
        digest.clone(),
        prop::option::of(("[a-z/0-9]{0,12}", digest)),
    );
    (
        prop_oneof![Just("version = 1\n"), Just("version = 2\n"), Just("")],
        prop::collection::vec(entry, 0..4),
    )
        .prop_map(|(version, entries)| {
            let mut text = version.to_owned();
            for (name, digest, platform) in entries {
                text.push_str(&format!(
                    "[[image]]\nname = {name}\ndigest = \"{digest}\"\n"
                ));
                if let Some((p, d)) = platform {
                    text.push_str(&format!("[image.platforms]\n\"{p}\" = \"{d}\"\n"));
                }
            }
            text
        })
}

/// Byte-level damage on top of a document: inserted, deleted and swapped bytes.
fn mutated(doc: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
    (doc, prop::collection::vec(edit, 0..4)).prop_map(|(text, edits)| {
        let mut bytes = text.into_bytes();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes.insert(i, byte),
                1 => {
                    bytes.remove(i);
                }
                _ => {
                    let j = i.saturating_sub(1);
                    bytes.swap(i, j);
                }
            }
        }
        bytes
    })
}

/// Every problem names the file and a place inside the text, and says what is wrong.
fn located(problems: &[Problem], path: &str, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!problems.is_empty());
    let lines = text.split('\n').count();
    for p in problems {
        prop_assert_eq!(p.path.to_str(), Some(path));
        prop_assert!(
            p.line >= 1 && p.line <= lines,
            "line {} of {}: {}",
            p.line,
            lines,
            p
        );
        let width = text
            .split('\n')
            .nth(p.line - 1)
            .map_or(0, |l| l.chars().count());
        prop_assert!(p.column >= 1 && p.column <= width + 1, "{p}");
        prop_assert!(!p.message.trim().is_empty(), "{p}");
    }
    Ok(())
}

/// Reads bytes as the loaders do: UTF-8 first (with its own location), then the parser.
fn config_from(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let path = Path::new(CONFIG);
    let text = match utf8_text(path, bytes.clone()) {
        Ok(text) => text,
        Err(p) => {
            let valid = String::from_utf8_lossy(&bytes).into_owned();
            return located(std::slice::from_ref(&p), CONFIG, &valid);
        }
    };
    match Config::parse(path, &text) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid { problems }) => located(&problems, CONFIG, &text),
        Err(e @ ConfigError::Read { .. }) => Err(TestCaseError::fail(format!("{e}"))),
    }
}

proptest! {
    #[test]
    fn configs_never_panic_and_every_problem_is_located(bytes in mutated(document())) {
        config_from(bytes)?;
    }

    #[test]
    fn arbitrary_bytes_as_a_config_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        config_from(bytes)?;
    }

    #[test]
    fn lock_files_never_panic_and_every_problem_is_located(bytes in mutated(lock_document())) {
        let path = Path::new(LOCK);
        match utf8_text(path, bytes.clone()) {
            Err(p) => located(&[p], LOCK, &String::from_utf8_lossy(&bytes))?,
            Ok(text) => {
                if let Err(problems) = LockFile::parse(path, &text) {
                    located(&problems, LOCK, &text)?;
                }
            }
        }
    }

    #[test]
    fn references_never_panic_and_parse_back_to_themselves(
        text in prop_oneof![
            "[a-z0-9.:/@_-]{0,40}",
            "[a-z0-9]{1,8}(\\.[a-z]{2,3})?(:[0-9]{1,5})?/[a-z0-9/_.-]{1,20}(:[A-Za-z0-9_.-]{1,10})?(@sha256:[0-9a-f]{64})?",
            "\\PC{0,20}",
        ]
    ) {
        match text.parse::<ImageRef>() {
            Ok(r) => {
                let again: ImageRef = r.to_string().parse().map_err(|e| TestCaseError::fail(format!("{r}: {e}")))?;
                prop_assert_eq!(again.to_string(), r.to_string());
            }
            Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
        }
    }
}

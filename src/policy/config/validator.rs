//! The validator's core: the text being read, the problems found in it (each at its value's
//! location), the key files read so far, and the checks of single values (durations, sizes,
//! percentages, schedules) that every section uses. The sections (`validate`, `prune`,
//! `window`, `verify`) extend [`Validator`] and import only from here, so no two of them
//! depend on each other.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::model::problem::{Problem, line_col};
use crate::policy::schedule::Schedule;
use crate::policy::signature::{PublicKey, TrustRoot};

/// Key files read so far, by path: one read and one parse each.
pub(super) type KeyCache = HashMap<PathBuf, Option<Arc<PublicKey>>>;

/// Trust roots read so far, by path.
pub(super) type RootCache = HashMap<PathBuf, Option<Arc<TrustRoot>>>;

pub(super) struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
    /// Signature keys read so far.
    keys: KeyCache,
    roots: RootCache,
}

impl<'a> Validator<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Validator {
            path,
            text,
            problems: Vec::new(),
            keys: KeyCache::new(),
            roots: RootCache::new(),
        }
    }

    /// The file being validated, for naming it.
    pub(super) fn path(&self) -> &'a Path {
        self.path
    }

    /// The text being validated, for locating values.
    pub(super) fn text(&self) -> &'a str {
        self.text
    }

    /// The directory relative paths in the config are read from.
    pub(super) fn config_dir(&self) -> &'a Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Signature keys read so far, by path.
    pub(super) fn roots_read(&mut self) -> &mut RootCache {
        &mut self.roots
    }

    pub(super) fn keys_read(&mut self) -> &mut KeyCache {
        &mut self.keys
    }

    /// Every problem found, in file order.
    pub(super) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| (p.line, p.column));
        self.problems
    }

    pub(super) fn problem(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            path: self.path.to_owned(),
            line,
            column,
            message,
        });
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    value.span(),
                    format!(
                        "{key}: invalid duration \"{}\": {}; write e.g. \"30s\", \"10m\", \
                         \"1h 30m\"",
                        value.get_ref(),
                        duration_problem(value.get_ref(), &e)
                    ),
                );
                Duration::ZERO
            }
        }
    }

    pub(super) fn integer(
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

    pub(super) fn schedule(&mut self, key: &str, value: &Spanned<String>) -> Option<Schedule> {
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

    pub(super) fn size(&mut self, key: &str, value: &Spanned<String>) -> Option<u64> {
        match value.get_ref().parse::<bytesize::ByteSize>() {
            Ok(b) => Some(b.as_u64()),
            Err(_) => {
                // bytesize's own words ("couldn't parse ... into a known SI unit") name
                // neither the key nor what is accepted.
                self.problem(
                    value.span(),
                    format!(
                        "{key}: invalid size \"{}\": write a number and a unit, B, KB, MB, \
                         GB or TB (powers of 1000), KiB, MiB, GiB or TiB (powers of 1024), \
                         e.g. \"50GB\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A percentage, written with its `%`: without it, `"0.85"` (a ratio, as some tools
    /// write it) would be read as 0.85 % and prune a disk that is 1 % full.
    pub(super) fn percent(&mut self, key: &str, value: &Spanned<String>) -> Option<f64> {
        let text = value.get_ref().trim();
        let Some(number) = text.strip_suffix('%') else {
            let hint = match text.parse::<f64>() {
                Ok(r) if r > 0.0 && r <= 1.0 => format!(
                    "write \"{}%\" for {} percent, or \"{text}%\" if you mean {text} percent",
                    r * 100.0,
                    r * 100.0
                ),
                _ => "write e.g. \"85%\"".to_owned(),
            };
            self.problem(
                value.span(),
                format!("{key}: \"{text}\" has no % sign; {hint}"),
            );
            return None;
        };
        match number.trim().parse::<f64>() {
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
}

/// What is wrong with a duration, in words: humantime's own ("expected number at 0") give a
/// byte offset and no hint.
pub(super) fn duration_problem(text: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    match e {
        E::Empty => "it is empty".to_owned(),
        E::NumberExpected(at) | E::InvalidCharacter(at) if *at == 0 => {
            "it must start with a number".to_owned()
        }
        E::NumberExpected(at) => format!(
            "a number is expected before \"{}\"",
            text.get(*at..).unwrap_or_default()
        ),
        E::InvalidCharacter(at) => format!(
            "\"{}\" is not allowed",
            text.get(*at..)
                .and_then(|t| t.chars().next())
                .unwrap_or(' ')
        ),
        E::UnknownUnit { unit, .. } if unit.is_empty() => {
            "a number needs a unit, as in \"90s\" or \"10m\"".to_owned()
        }
        E::UnknownUnit { unit, .. } => {
            format!("unknown unit \"{unit}\" (units: ms, s, m, h, d, w and their long names)")
        }
        E::NumberOverflow => "the number is too large".to_owned(),
    }
}

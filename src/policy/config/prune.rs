//! Validation of the `[prune]` table: its schedule, limits, watermarks and keep rules.

use std::time::Duration;

use super::PruneSettings;
use super::raw::RawPrune;
use super::validator::Validator;
use crate::model::reference::valid_digest;
use crate::policy::keep::{KeepRules, Limits, compile_keep};

impl Validator<'_> {
    /// The `[prune]` table.
    pub(super) fn prune(&mut self, raw: RawPrune) -> Option<PruneSettings> {
        let defaults = PruneSettings::default();
        // A bad schedule or window is recorded, and the rest still checked: one run lists
        // every problem of the table.
        let schedule = match &raw.schedule {
            Some(s) => self.schedule("prune.schedule", s),
            None => Some(defaults.schedule),
        };
        let limits = self.limits(&raw, &defaults.limits);
        let keep = self.keep_rules(&raw);
        let build_cache_max_size = raw
            .build_cache_max_size
            .as_ref()
            .and_then(|v| self.size("prune.build_cache_max_size", v));
        let build_cache_max_age = raw
            .build_cache_max_age
            .map(|v| self.duration("prune.build_cache_max_age", Some(v), Duration::ZERO));
        let pause = self.duration("prune.pause", raw.pause, defaults.pause);
        let window = raw.window.map(|w| self.window("prune.window", w));
        // None when the window was given and is bad; Some(None) when there is none.
        let window = window.map_or(Some(None), |w| w.map(Some));
        let (Some(schedule), Some(window)) = (schedule, window) else {
            return None;
        };
        Some(PruneSettings {
            window,
            schedule,
            pause,
            build_cache_max_age,
            build_cache_max_size,
            limits,
            keep,
        })
    }

    /// The ages, watermarks and caps of `[prune]`.
    fn limits(&mut self, raw: &RawPrune, defaults: &Limits) -> Limits {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let min_age = self.duration(
            "prune.min_age",
            raw.min_age.clone(),
            seconds(defaults.min_age),
        );
        let dangling = self.duration(
            "prune.dangling_min_age",
            raw.dangling_min_age.clone(),
            seconds(defaults.dangling_min_age.unwrap_or(0)),
        );
        let unused = raw
            .unused_max_age
            .clone()
            .map(|v| self.duration("prune.unused_max_age", Some(v), Duration::ZERO));
        let (high, low) = self.watermarks(raw);
        let max_store_size = raw
            .max_store_size
            .as_ref()
            .and_then(|v| self.size("prune.max_store_size", v));
        let max_removals = self.integer(
            "prune.max_removals",
            raw.max_removals.clone(),
            1..100_001,
            i64::try_from(defaults.max_removals).unwrap_or(i64::MAX),
        );
        Limits {
            min_age: secs(min_age),
            dangling_min_age: Some(secs(dangling)),
            unused_max_age: unused.map(secs),
            high_watermark: high,
            low_watermark: low,
            max_store_size,
            max_removals: usize::try_from(max_removals).unwrap_or(defaults.max_removals),
        }
    }

    /// The high and low watermarks: the low one defaults to 5 points under the high one, and
    /// must be below it.
    fn watermarks(&mut self, raw: &RawPrune) -> (Option<f64>, Option<f64>) {
        let high = raw
            .high_watermark
            .as_ref()
            .and_then(|v| self.percent("prune.high_watermark", v));
        let low = raw
            .low_watermark
            .as_ref()
            .and_then(|v| self.percent("prune.low_watermark", v));
        match (high, low, &raw.high_watermark, &raw.low_watermark) {
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
        }
    }

    /// `keep`, `keep_digests`, `keep_labels`, `keep_newest` and `prune_local_only`.
    fn keep_rules(&mut self, raw: &RawPrune) -> KeepRules {
        let keep_newest = self.integer("prune.keep_newest", raw.keep_newest.clone(), 0..1001, 0);
        let mut names = Vec::new();
        for k in &raw.keep {
            match compile_keep(k.get_ref()) {
                Ok(m) => names.push(m),
                Err(e) => self.problem(
                    k.span(),
                    format!(
                        "prune.keep: invalid pattern \"{}\": {}",
                        k.get_ref(),
                        // regex's own error draws a caret under the pattern, over lines; a
                        // problem is one line, `path:line:column: message`.
                        e.to_string()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ),
            }
        }
        let mut digests = std::collections::HashSet::new();
        for d in &raw.keep_digests {
            if valid_digest(d.get_ref()) {
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
        KeepRules {
            names,
            digests,
            labels,
            newest_per_repository: usize::try_from(keep_newest).unwrap_or(0),
            prune_local_only: raw.prune_local_only,
        }
    }
}

/// Seconds as a duration (negative: none).
fn seconds(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

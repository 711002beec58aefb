//! Cron schedules and splay, as arithmetic on timestamps.
//!
//! Operators write the 5-field Unix syntax (`0 3 * * 1` is Monday 03:00), optionally with a
//! leading seconds field. `croner` gives those their Unix meaning (the `cron` crate would read
//! day-of-week Quartz-style and reject 5 fields).
//!
//! Splay spreads a fleet: each host shifts the whole schedule by its own fixed offset in
//! `[0, splay)`, drawn once when the daemon starts, so hosts do not hit the registry at one instant
//! and each host still runs at a regular, predictable time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron expression, with the text the operator wrote (for messages).
#[derive(Clone)]
pub struct Schedule {
    /// The expression as written, for logs and plans.
    expr: String,
    /// The parsed form that computes occurrences.
    cron: Cron,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchedule(String);

impl Schedule {
    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// A human description ("At 03:00 on Monday"), for `plan` and logs.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The first run strictly after `now` when the whole schedule is shifted later by `offset`
    /// (the host's splay). `None` when the expression never fires again.
    pub fn next_after<Tz: TimeZone>(
        &self,
        now: &DateTime<Tz>,
        offset: Duration,
    ) -> Option<DateTime<Tz>> {
        let offset = chrono::Duration::from_std(offset).ok()?;
        // Occurrence `o` runs at `o + offset`; we want the first with `o + offset > now`.
        let shifted_now = now.clone() - offset;
        let occurrence = self.cron.find_next_occurrence(&shifted_now, false).ok()?;
        Some(occurrence + offset)
    }
}

/// The fields of a five-field expression, and what each accepts.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

/// Which field of `expr` croner refuses, in words: croner's own ("Component error: Number out
/// of bounds.") name neither the field nor its range. Each field is tried alone, the others
/// `*`, by croner itself. None when no single field is to blame.
fn field_problem(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let (seconds, rest) = match fields.len() {
        6 => (Some(fields[0]), &fields[1..]),
        _ => (None, &fields[..]),
    };
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    if let Some(sec) = seconds
        && parser.parse(&format!("{sec} * * * * *")).is_err()
    {
        return Some(format!("the seconds field \"{sec}\" is not valid (0-59)"));
    }
    rest.iter().zip(FIELDS).enumerate().find_map(|(i, (value, (name, range)))| {
        let mut alone = ["*"; 5];
        alone[i] = value;
        parser.parse(&alone.join(" ")).is_err().then(|| {
            format!("the {name} field \"{value}\" is not valid ({range}, with *, lists, ranges and steps such as */15)")
        })
    })
}

impl FromStr for Schedule {
    type Err = InvalidSchedule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = s.split_whitespace().count();
        if !s.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(InvalidSchedule(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with \
                 seconds first, found {fields}"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map_err(|e| InvalidSchedule(field_problem(s).unwrap_or_else(|| e.to_string())))?;
        // A syntactically fine expression can still never fire (`0 0 30 2 *`): refuse it now
        // rather than have a daemon that silently never refreshes.
        let probe = chrono::Utc::now();
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(InvalidSchedule(
                "the expression never fires (no date matches it)".into(),
            ));
        }
        Ok(Schedule {
            expr: s.to_owned(),
            cron,
        })
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.expr).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

/// This host's splay offset: a point in `[0, max)` chosen by `sample` in `[0, 1)`.
pub(crate) fn splay_offset(max: Duration, sample: f64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let offset = max.mul_f64(sample.clamp(0.0, 1.0));
    // `sample` may be 1.0 after clamping; keep the offset strictly below `max` at whole-ms
    // resolution so two schedules never collapse onto the next slot.
    offset.min(max.saturating_sub(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Utc};
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_mean_unix_cron() {
        // 2026-11-23 is a Monday. `0 3 * * 1` is Monday 03:00 in Unix cron (Sunday in Quartz).
        let s: Schedule = "0 3 * * 1".parse().unwrap();
        let next = s
            .next_after(&at("2026-11-23T12:00:00Z"), Duration::ZERO)
            .unwrap();
        assert_eq!(next, at("2026-11-30T03:00:00Z"));
        assert_eq!(next.weekday(), chrono::Weekday::Mon);
        // 0 and 7 are both Sunday.
        let sun0: Schedule = "0 0 * * 0".parse().unwrap();
        let sun7: Schedule = "0 0 * * 7".parse().unwrap();
        let now = at("2026-11-23T00:00:00Z");
        assert_eq!(
            sun0.next_after(&now, Duration::ZERO),
            sun7.next_after(&now, Duration::ZERO)
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s: Schedule = "*/5 * * * * *".parse().unwrap();
        let next = s
            .next_after(&at("2026-11-23T12:00:01Z"), Duration::ZERO)
            .unwrap();
        assert_eq!(next, at("2026-11-23T12:00:05Z"));
    }

    #[test]
    fn strictly_after_now() {
        let s: Schedule = "0 * * * *".parse().unwrap();
        let now = at("2026-11-23T12:00:00Z");
        assert_eq!(
            s.next_after(&now, Duration::ZERO).unwrap(),
            at("2026-11-23T13:00:00Z")
        );
    }

    #[test]
    fn splay_shifts_the_grid() {
        let s: Schedule = "0 * * * *".parse().unwrap();
        let offset = Duration::from_secs(7 * 60);
        // Before this hour's shifted slot: it is still ahead.
        let next = s.next_after(&at("2026-11-23T12:03:00Z"), offset).unwrap();
        assert_eq!(next, at("2026-11-23T12:07:00Z"));
        // After it: the next hour's slot.
        let next = s.next_after(&at("2026-11-23T12:08:00Z"), offset).unwrap();
        assert_eq!(next, at("2026-11-23T13:07:00Z"));
    }

    #[test]
    fn bad_expressions_are_refused_with_reasons() {
        let err = |s: &str| s.parse::<Schedule>().unwrap_err().to_string();
        assert!(err("* * *").contains("found 3"));
        assert!(err("0 0 3 * * 1 2026").contains("found 7"));
        assert!(!err("61 * * * *").is_empty());
        assert!(!err("0 25 * * *").is_empty());
        assert!(err("0 0 30 2 *").contains("never fires"));
        assert!("@hourly".parse::<Schedule>().is_ok());
    }

    #[test]
    fn splay_offset_is_bounded() {
        let max = Duration::from_secs(300);
        assert_eq!(splay_offset(Duration::ZERO, 0.7), Duration::ZERO);
        assert_eq!(splay_offset(max, 0.0), Duration::ZERO);
        assert!(splay_offset(max, 1.0) < max);
        assert_eq!(splay_offset(max, 0.5), Duration::from_secs(150));
    }

    proptest! {
        /// The next run is after now, lands on the schedule shifted by the offset, and no
        /// shifted slot is skipped in between.
        #[test]
        fn next_run_is_the_first_shifted_slot(
            minute in 0u32..60,
            step in 1u32..30,
            now_secs in 1_700_000_000i64..1_900_000_000,
            offset_secs in 0u64..3600,
        ) {
            let expr = format!("{minute}-59/{step} * * * *");
            let s: Schedule = expr.parse().unwrap();
            let now = Utc.timestamp_opt(now_secs, 0).unwrap();
            let offset = Duration::from_secs(offset_secs);
            let next = s.next_after(&now, offset).unwrap();
            prop_assert!(next > now);
            let slot = next - chrono::Duration::from_std(offset).unwrap();
            prop_assert_eq!(slot.second(), 0);
            prop_assert!(slot.minute() >= minute && (slot.minute() - minute).is_multiple_of(step));
            // The previous slot (shifted) is not after now.
            let prev = s.cron.find_previous_occurrence(&slot, false).unwrap();
            prop_assert!(prev + chrono::Duration::from_std(offset).unwrap() <= now);
        }

        #[test]
        fn splay_offset_in_range(max_ms in 0u64..86_400_000, sample in 0.0f64..=1.0) {
            let max = Duration::from_millis(max_ms);
            let off = splay_offset(max, sample);
            prop_assert!(off <= max);
            prop_assert!(max.is_zero() || off < max);
        }
    }
}

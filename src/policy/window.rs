//! Maintenance windows, as arithmetic on timestamps: a window opens on a cron schedule in a
//! time zone and stays open for a fixed length of real time.
//!
//! Scheduled work that falls due outside its window waits for the next opening; work under way
//! when the window closes finishes its current image and starts no other. The host's splay still
//! spreads a fleet inside the window: a deferred run starts at the opening plus the host's
//! offset, wrapped into the window's length, so every host starts while the window is open
//! however short it is.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Local, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

use crate::policy::schedule::Schedule;

/// Overlapping or back-to-back openings merge into one stretch. One that goes on for more than
/// this many openings (`* * * * *` for an hour) never closes: the config refuses such a window,
/// and the arithmetic stops counting there.
const MAX_MERGED: usize = 1_000;

/// How many schedule matches [`Window::opening_after`] walks past that name instants before
/// the one asked about: a repeated hour of a schedule that fires every second, and more.
const MAX_STEPS: usize = 10_000;

/// The zone a window's schedule is read in, from the system's time zone database
/// (`/usr/share/zoneinfo`, kept current by the tzdata package) through jiff. chrono-tz would
/// compile the whole database into the binary, and its tables need 1.7 MB of relocations that
/// every start touches: 1.9 MiB more resident for an idle daemon (docs/benchmarks.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    /// The IANA name, `None` for the host's own zone.
    name: Option<String>,
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// The host's own zone (`TZ`, else `/etc/localtime`).
    pub(crate) fn host() -> Zone {
        Zone {
            name: None,
            tz: jiff::tz::TimeZone::system(),
        }
    }

    /// The zone `name` (`Europe/Berlin`), when the system's database has it.
    pub(crate) fn named(name: &str) -> Result<Zone, String> {
        jiff::tz::TimeZone::get(name)
            .map(|tz| Zone {
                name: Some(name.to_owned()),
                tz,
            })
            .map_err(|e| e.to_string())
    }

    /// The wall-clock time in this zone at `t`.
    fn wall(&self, t: DateTime<Utc>) -> Option<NaiveDateTime> {
        let ts = jiff::Timestamp::new(
            t.timestamp(),
            i32::try_from(t.timestamp_subsec_nanos()).ok()?,
        )
        .ok()?;
        let dt = self.tz.to_datetime(ts);
        NaiveDate::from_ymd_opt(
            i32::from(dt.year()),
            u32::try_from(dt.month()).ok()?,
            u32::try_from(dt.day()).ok()?,
        )?
        .and_hms_nano_opt(
            u32::try_from(dt.hour()).ok()?,
            u32::try_from(dt.minute()).ok()?,
            u32::try_from(dt.second()).ok()?,
            u32::try_from(dt.subsec_nanosecond()).ok()?,
        )
    }

    /// The instant the wall-clock time `wall` names in this zone. A time a DST change skips
    /// is moved on by the gap, and one it repeats is the first: jiff's "compatible" choice,
    /// which is also what cron daemons do.
    fn instant(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let dt = jiff::civil::DateTime::new(
            i16::try_from(wall.year()).ok()?,
            i8::try_from(wall.month()).ok()?,
            i8::try_from(wall.day()).ok()?,
            i8::try_from(wall.hour()).ok()?,
            i8::try_from(wall.minute()).ok()?,
            i8::try_from(wall.second()).ok()?,
            i32::try_from(wall.nanosecond()).ok()?,
        )
        .ok()?;
        let ts = self.tz.to_ambiguous_timestamp(dt).compatible().ok()?;
        Utc.timestamp_opt(ts.as_second(), u32::try_from(ts.subsec_nanosecond()).ok()?)
            .single()
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.as_deref().unwrap_or("host"))
    }
}

/// When a window is open: from the opening, for the length.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    /// When it opens.
    pub(crate) start: Schedule,
    /// How long it stays open, in real time (a DST change does not stretch or shrink it).
    pub(crate) length: Duration,
    /// The zone `start` is read in.
    pub(crate) zone: Zone,
}

/// One stretch of time a window is open: `[opens, closes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opening {
    /// When it opens.
    pub(crate) opens: DateTime<Utc>,
    /// When it closes.
    pub(crate) closes: DateTime<Utc>,
}

impl Opening {
    /// Whether `t` falls inside.
    #[cfg(test)]
    pub(crate) fn contains(&self, t: DateTime<Utc>) -> bool {
        self.opens <= t && t < self.closes
    }
}

impl Window {
    /// The first opening strictly after `t`. The schedule is matched against the zone's wall
    /// clock (as if it were UTC, which has no DST), and each match turned into an instant.
    fn opening_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = self.search_from(t)?;
        // Matches can name instants at or before `t`: those a repeated hour maps back in time,
        // and those `search_from` starts early for. Walk past them; each step is one match.
        for _ in 0..MAX_STEPS {
            let next = self
                .start
                .next_after(&Utc.from_utc_datetime(&wall), Duration::ZERO)?
                .naive_utc();
            let at = self.zone.instant(next)?;
            if at > t {
                return Some(at);
            }
            wall = next;
        }
        None
    }

    /// The wall-clock time to look for matches from, so that none naming an instant after `t`
    /// is missed. That is the wall clock at `t`, except just after a DST change skipped an hour:
    /// a match inside the skipped hour (02:30) moves on by the gap (to 03:30), which can be
    /// after `t` though the wall clock at `t` (03:00) is past 02:30. Reading `t` at the offset
    /// of a day before starts the search before any such gap.
    fn search_from(&self, t: DateTime<Utc>) -> Option<NaiveDateTime> {
        let day = chrono::Duration::days(1);
        let now = self.zone.wall(t)?;
        let before = self.zone.wall(t - day)? + day;
        Some(now.min(before))
    }

    fn length(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.length).unwrap_or(chrono::Duration::MAX)
    }

    /// The stretch that opens at `opens`: to its length's end, merged with every opening that
    /// comes before the stretch has closed.
    fn stretch_from(&self, opens: DateTime<Utc>) -> Opening {
        self.merged_from(opens).0
    }

    /// [`Self::stretch_from`], and whether it went on past counting.
    fn merged_from(&self, opens: DateTime<Utc>) -> (Opening, bool) {
        let mut closes = opens + self.length();
        let mut last = opens;
        for _ in 0..MAX_MERGED {
            match self.opening_after(last) {
                Some(next) if next <= closes => {
                    closes = closes.max(next + self.length());
                    last = next;
                }
                _ => return (Opening { opens, closes }, false),
            }
        }
        (Opening { opens, closes }, true)
    }

    /// Whether the window, seen from `now`, ever closes: false when each opening comes before
    /// the previous one has closed, so it would stay open for good.
    pub(crate) fn closes(&self, now: DateTime<Utc>) -> bool {
        match self.opening_after(now) {
            Some(opens) => !self.merged_from(opens).1,
            None => true,
        }
    }

    /// The stretch open at `now`, if the window is open then. Its `opens` is the first
    /// opening whose own length covers `now` (openings before it may have merged into the same
    /// stretch); its `closes` is the stretch's end.
    pub(crate) fn open_at(&self, now: DateTime<Utc>) -> Option<Opening> {
        // Open exactly when some opening falls in (now - length, now].
        let first = self.opening_after(now - self.length())?;
        (first <= now).then(|| self.stretch_from(first))
    }

    /// The stretch open at `now`, or else the next one to open. `None` when the window never
    /// opens again.
    pub(crate) fn current_or_next(&self, now: DateTime<Utc>) -> Option<Opening> {
        self.open_at(now)
            .or_else(|| self.opening_after(now).map(|o| self.stretch_from(o)))
    }

    /// When work that falls due at `due` may start: at `due` inside a window, else at the
    /// next opening plus `offset` (the host's splay) wrapped into the window's length. `None`
    /// when the window never opens again.
    pub(crate) fn start_for(&self, due: DateTime<Utc>, offset: Duration) -> Option<DateTime<Utc>> {
        if self.open_at(due).is_some() {
            return Some(due);
        }
        let opens = self.opening_after(due)?;
        let length = self.length.as_nanos().max(1);
        let within = u64::try_from(offset.as_nanos() % length).unwrap_or(0);
        Some(opens + chrono::Duration::nanoseconds(i64::try_from(within).unwrap_or(0)))
    }

    /// A description for logs and plans: "At 02:00 AM, for 4h (Europe/Berlin)".
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}, for {} ({})",
            self.start.describe(),
            humantime::format_duration(self.length),
            self.zone
        )
    }
}

/// When scheduled work runs next: the schedule's first time after `now` shifted by the host's
/// `offset`, moved to inside `window` when it falls outside. `None` when either never comes.
pub(crate) fn next_run(
    schedule: &Schedule,
    window: Option<&Window>,
    now: DateTime<Local>,
    offset: Duration,
) -> Option<DateTime<Local>> {
    let due = schedule.next_after(&now, offset)?;
    match window {
        None => Some(due),
        Some(w) => w
            .start_for(due.with_timezone(&Utc), offset)
            .map(|t| t.with_timezone(&Local)),
    }
}

#[cfg(test)]
mod tests;

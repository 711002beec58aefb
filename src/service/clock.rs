//! The wall clock the daemon schedules by.
//!
//! Schedules and retries are wall-clock times, re-read after every nap so a clock that jumps
//! (NTP stepping it at boot, a suspended VM) does not delay a run. Unit tests run the daemon
//! under tokio's paused clock instead, so hours of schedule pass in milliseconds: there, the
//! wall clock is the time the test started plus the paused clock's progress.

use chrono::{DateTime, Local};

/// Now, on the wall clock.
#[cfg(not(test))]
pub(crate) fn now() -> DateTime<Local> {
    Local::now()
}

/// Now: the test's start, plus however far tokio's (paused) clock has moved since.
#[cfg(test)]
pub(crate) fn now() -> DateTime<Local> {
    use std::sync::OnceLock;
    static START: OnceLock<(DateTime<Local>, std::time::Instant)> = OnceLock::new();
    let (wall, instant) = START.get_or_init(|| (Local::now(), std::time::Instant::now()));
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(*instant);
    *wall + elapsed
}

//! Liveness: whether the daemon's loops still move.
//!
//! Every engine call, registry request and pull attempt has a time limit, so a loop that
//! stops moving for longer than its current step allows is wedged, not busy: a blocking call
//! that should never block, a lock held forever by another process, a bug. Each loop holds a
//! [`Heartbeat`] and beats whenever it moves, saying how long its next step may take. The
//! daemon's `/healthz` answers 503 while any loop is overdue, and the systemd watchdog stops
//! being fed, so the service manager restarts a daemon that cannot recover by itself.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::sync::Locked;

/// Slack on top of every step's own limit: a busy host runs a loop a little late.
const GRACE: Duration = Duration::from_secs(10);

/// A loop's last beat: when, what it went on to do, and how long that may take.
#[derive(Debug, Clone, Copy)]
struct Beat {
    at: Instant,
    doing: &'static str,
    within: Duration,
}

/// The daemon's loops and their last beats. Cheap to clone; clones share the loops.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    loops: Arc<Mutex<BTreeMap<&'static str, Beat>>>,
}

/// A loop that has not moved for longer than its step allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stuck {
    /// The loop: `pulls`, `prunes`.
    pub(crate) name: &'static str,
    /// What it was doing.
    pub(crate) doing: &'static str,
    /// How long since it last moved.
    pub(crate) silent: Duration,
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} loop is stuck: {} for {}",
            self.name,
            self.doing,
            humantime::format_duration(Duration::from_secs(self.silent.as_secs()))
        )
    }
}

impl Health {
    /// No loop yet: healthy.
    pub(crate) fn new() -> Health {
        Health::default()
    }

    /// Registers the loop `name`; it counts until the heartbeat is dropped.
    pub(crate) fn heartbeat(&self, name: &'static str) -> Heartbeat {
        let heartbeat = Heartbeat {
            health: self.clone(),
            name,
        };
        heartbeat.idle("starting");
        heartbeat
    }

    /// The loops that are overdue now; empty when all is well.
    pub(crate) fn stuck(&self) -> Vec<Stuck> {
        let beats: Vec<(&'static str, Beat)> =
            self.loops.locked().iter().map(|(n, b)| (*n, *b)).collect();
        overdue(&beats, Instant::now())
    }
}

/// The loops among `beats` whose step has overrun its limit (plus [`GRACE`]) at `now`.
fn overdue(beats: &[(&'static str, Beat)], now: Instant) -> Vec<Stuck> {
    beats
        .iter()
        .filter_map(|(name, beat)| {
            let silent = now.saturating_duration_since(beat.at);
            (silent > beat.within.saturating_add(GRACE)).then_some(Stuck {
                name,
                doing: beat.doing,
                silent,
            })
        })
        .collect()
}

/// One loop's beat. Dropping it unregisters the loop (a config's loops end with it).
#[derive(Debug)]
pub(crate) struct Heartbeat {
    health: Health,
    name: &'static str,
}

impl Heartbeat {
    /// The loop moved, and goes on `doing` something that takes at most `within`.
    pub(crate) fn beat(&self, doing: &'static str, within: Duration) {
        let beat = Beat {
            at: Instant::now(),
            doing,
            within,
        };
        self.health.loops.locked().insert(self.name, beat);
    }

    /// The loop moved, and waits for something with no time limit (a stop, a reload).
    pub(crate) fn idle(&self, doing: &'static str) {
        self.beat(doing, Duration::MAX);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.health.loops.locked().remove(self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn beat(at: Instant, within: u64) -> Beat {
        Beat {
            at,
            doing: "pulling",
            within: Duration::from_secs(within),
        }
    }

    #[test]
    fn a_loop_is_stuck_only_past_its_step_and_the_grace() {
        let t0 = Instant::now();
        let beats = [("pulls", beat(t0, 60)), ("prunes", beat(t0, 600))];
        let at = |s| t0 + Duration::from_secs(s);
        assert!(overdue(&beats, at(60 + GRACE.as_secs())).is_empty());
        let stuck = overdue(&beats, at(61 + GRACE.as_secs()));
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].name, "pulls");
        assert_eq!(
            stuck[0].to_string(),
            "the pulls loop is stuck: pulling for 1m 11s"
        );
        // An idle loop is never overdue.
        let idle = [(
            "pulls",
            Beat {
                within: Duration::MAX,
                ..beat(t0, 0)
            },
        )];
        assert!(overdue(&idle, at(10 * 365 * 86_400)).is_empty());
    }

    proptest! {
        #[test]
        fn overdue_means_silent_longer_than_the_step_allows(
            within in 0u64..10_000,
            silent in 0u64..20_000,
        ) {
            let t0 = Instant::now();
            let stuck = overdue(&[("pulls", beat(t0, within))], t0 + Duration::from_secs(silent));
            prop_assert_eq!(stuck.len() == 1, silent > within + GRACE.as_secs());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beats_keep_a_loop_healthy_and_a_dropped_loop_counts_no_more() {
        let health = Health::new();
        let pulls = health.heartbeat("pulls");
        pulls.beat("pulling", Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(health.stuck().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(health.stuck()[0].name, "pulls");
        pulls.beat("pulling", Duration::from_secs(5));
        assert!(health.stuck().is_empty());
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(pulls);
        assert!(health.stuck().is_empty());
    }
}

//! The heartbeats of the daemon's loops (see [`crate::service::health`]): how long each step
//! of a pull run or a prune cycle may take before its loop counts as stuck.

use std::time::Duration;

use crate::service::health::Heartbeat;
use crate::service::progress::{Progress, Step};

/// How long one engine call other than a pull may take: bollard's own request timeout.
pub(super) const ENGINE_CALL: Duration = Duration::from_secs(120);

/// How long planning a prune cycle may take: a few engine listings and registry questions,
/// each bounded.
const PRUNE_PLANNING: Duration = Duration::from_secs(600);

/// A pull loop's heartbeat. An attempt is bounded by `pull.timeout`; reading the store by the
/// engine call's timeout.
pub(super) struct PullBeat {
    pub(super) heartbeat: Heartbeat,
    pub(super) attempt: Duration,
}

impl Progress for PullBeat {
    fn step(&self, step: Step<'_>) {
        match step {
            Step::Planning => self.heartbeat.beat("reading the store", ENGINE_CALL),
            Step::Retry(delay) => self
                .heartbeat
                .beat("waiting to retry", delay.saturating_add(self.attempt)),
            Step::Planned(_) | Step::Attempt(_) | Step::Bytes(..) | Step::Settled => {
                self.heartbeat.beat("pulling", self.attempt)
            }
            Step::Removing(_) => {}
        }
    }
}

/// A prune loop's heartbeat. A removal is a look at the containers and a removal, and may
/// pull back an image a container took up meanwhile.
pub(super) struct PruneBeat {
    pub(super) heartbeat: Heartbeat,
    pub(super) pull: Duration,
}

impl PruneBeat {
    /// A cycle starts.
    pub(super) fn planning(&self) {
        self.heartbeat
            .beat("planning a prune cycle", PRUNE_PLANNING);
    }
}

impl Progress for PruneBeat {
    fn step(&self, step: Step<'_>) {
        if let Step::Removing(pause) = step {
            let limit = pause
                .saturating_add(ENGINE_CALL * 2)
                .saturating_add(self.pull);
            self.heartbeat.beat("removing images", limit);
        }
    }
}

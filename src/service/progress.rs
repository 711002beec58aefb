//! What a pull run or a prune cycle tells whoever follows it as it goes: the daemon's
//! heartbeat (see [`super::health`]), or a progress bar on a terminal.

use std::time::Duration;

/// A step of a run or a cycle.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Reading the store and learning the digests.
    Planning,
    /// The plan is made; carrying it out starts.
    Planned,
    /// An attempt at an image (a resolution or a pull) starts.
    Attempt,
    /// An attempt failed; the next starts after this delay.
    Retry(Duration),
    /// An image is settled, one way or another.
    Settled,
    /// A prune cycle goes on to remove an image, after `pause`.
    Removing(Duration),
}

/// Follows the steps of a run or a cycle. Called from the run's tasks: it must not block.
pub(crate) trait Progress: Send + Sync {
    /// One step.
    fn step(&self, step: Step);
}

/// Nobody follows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unfollowed;

impl Progress for Unfollowed {
    fn step(&self, _: Step) {}
}

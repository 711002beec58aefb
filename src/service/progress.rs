//! What a pull run or a prune cycle tells whoever follows it as it goes: the daemon's
//! heartbeat (see [`super::health`]), or a progress bar on a terminal.

use std::time::Duration;

use crate::model::reference::ImageRef;

/// A step of a run or a cycle.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    /// Reading the store and learning the digests.
    Planning,
    /// The plan is made: this many images to carry out.
    Planned(usize),
    /// An attempt at an image (a resolution or a pull) starts.
    Attempt(&'a ImageRef),
    /// A pull's bytes so far and in all, as the engine reports them.
    Bytes(&'a ImageRef, u64, u64),
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
    fn step(&self, step: Step<'_>);
}

/// Nobody follows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unfollowed;

impl Progress for Unfollowed {
    fn step(&self, _: Step<'_>) {}
}

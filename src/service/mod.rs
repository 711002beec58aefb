//! The long-running parts: a session over one config, the puller and the pruner that carry out
//! its decisions, the shutdown they all obey, and the daemon with its readiness and metrics.

pub(crate) mod clock;
pub(crate) mod daemon;
pub(crate) mod health;
pub(crate) mod in_flight;
pub(crate) mod metrics;
pub(crate) mod progress;
pub(crate) mod pruner;
pub(crate) mod puller;
pub(crate) mod readiness;
pub(crate) mod session;
pub(crate) mod shutdown;
pub(crate) mod uses;
pub(crate) mod verify;

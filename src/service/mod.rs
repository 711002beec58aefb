//! The long-running parts: a session over one config, the puller and the pruner that carry out
//! its decisions, the shutdown they all obey, and the daemon with its readiness and metrics.

pub mod daemon;
pub mod in_flight;
pub mod metrics;
pub mod pruner;
pub mod puller;
pub mod readiness;
pub mod session;
pub mod shutdown;
pub mod uses;

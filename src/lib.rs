//! stowage keeps a host's container image store the way its operators declared it.
//!
//! The binary is a thin shell around this library: [`cli`] parses arguments and dispatches,
//! [`daemon`] is the long-running loop, [`converge`] carries out a pull plan against an
//! [`engine`], and the decisions themselves ([`plan`], [`schedule`], [`retry`], [`failure`],
//! [`config`] validation) are pure functions over plain data.

pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod converge;
pub mod credentials;
pub mod daemon;
pub mod engine;
pub mod failure;
#[cfg(test)]
mod fuzz;
pub mod lockfile;
pub mod logging;
pub mod metrics;
pub mod pin;
pub mod plan;
pub mod prune;
pub mod pruner;
pub mod readiness;
pub mod reference;
pub mod registry;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod state;

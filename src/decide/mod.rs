//! The decisions, as pure functions over plain data: no I/O, no clock, no randomness (each is
//! passed in), so each is unit- and property-tested on its own.

pub mod outcome;
pub mod pin;
pub mod prune_plan;
pub mod pull_plan;
pub mod shortfall;
pub mod usage;

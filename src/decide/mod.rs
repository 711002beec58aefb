//! The decisions, as pure functions over plain data: no I/O, no clock, no randomness (each is
//! passed in), so each is unit- and property-tested on its own.

pub(crate) mod budget;
pub(crate) mod cooldown;
pub(crate) mod late;
pub(crate) mod outcome;
pub(crate) mod pin;
pub(crate) mod prune_plan;
pub(crate) mod pull_plan;
pub(crate) mod removal;
pub(crate) mod shortfall;
pub(crate) mod signature;
pub(crate) mod updates;
pub(crate) mod usage;

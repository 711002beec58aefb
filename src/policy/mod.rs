//! What operators write and what the daemon keeps between runs: parsed, validated, saved.

pub(crate) mod atomic_file;
pub(crate) mod config;
#[cfg(test)]
mod fuzz;
pub(crate) mod keep;
pub(crate) mod lockfile;
pub(crate) mod retry;
pub(crate) mod schedule;
pub(crate) mod signature;
pub(crate) mod state;
pub(crate) mod window;

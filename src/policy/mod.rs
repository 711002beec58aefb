//! What operators write and what the daemon keeps between runs: parsed, validated, saved.

pub mod atomic_file;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod keep;
pub mod lockfile;
pub mod retry;
pub mod schedule;
pub mod state;

//! stowage keeps a host's container image store the way its operators declared it.
//!
//! The library is the daemon; `main.rs` only hands over the exit code. Its layers are folders,
//! and imports point one way, down this list (`tests/layers.rs` fails the build's tests when one
//! points up, or when two modules import each other):
//!
//! - [`model`]: plain data with no I/O: references, images, platforms, failures, diagnostics.
//! - [`policy`]: what operators write and what the daemon keeps: the config and its validation,
//!   keep rules and limits, schedules, retry, the lock file, the state file, atomic writes.
//! - [`decide`]: pure functions only: pin resolution, the pull plan, the prune plan (phase by
//!   phase), usage observation and the shortfall of missing images.
//! - [`io`]: adapters to the outside world behind narrow traits: the engine, registries,
//!   credentials, host facts.
//! - [`service`]: the long-running parts: the session, the puller and the pruner, the shutdown
//!   primitive, the daemon, readiness and metrics.
//! - [`cli`]: arguments, one function per command, report rendering, and the one place an
//!   error becomes an exit code.
//!
//! Only what the binary and the integration tests drive is public, re-exported below.

mod cli;
mod decide;
mod io;
mod model;
mod policy;
mod service;

pub use cli::main;

// What the integration tests drive against a real engine: a session and its puller and pruner,
// the engine adapter and its traits, and the data they exchange.
pub use decide::outcome::PullResult;
pub use io::credentials::RegistryAuth;
pub use io::engine::docker::DockerEngine;
pub use io::engine::{Engine, OnBytes, PullRequest, Pulled, Store};
pub use io::registry::{Registry, Resolver};
pub use model::failure::{Failure, FailureClass};
pub use model::image::{
    BuildCache, Deleted, Deletions, ImageStore, LocalImage, StoreEvent, StoreImage,
};
pub use model::plain_http::EngineInsecure;
pub use model::reference::ImageRef;
pub use policy::config::{Config, PruneSettings};
pub use policy::lockfile::LockFile;
pub use policy::state::State;
pub use service::in_flight::InFlight;
pub use service::pruner::{
    AgainstPlan, Cycle, LateRace, LostImage, Pruner, Race, Removal, RemovalResult,
};
pub use service::puller::PinUpkeep;
pub use service::session::Session;
pub use service::shutdown::Shutdown;
pub use service::uses::watch_uses;

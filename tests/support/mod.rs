//! Shared helpers for the integration tests, one concern per file: the test environment
//! ([`env`]), the engine's image store ([`images`]), per-test scratch state ([`scratch`]),
//! running stowage and reading its JSON ([`stowage`]), loopback networking ([`net`]), and
//! waiting for what comes a moment later ([`poll`]), and signing with cosign ([`cosign`]).

mod background;
mod cosign;
mod referrers;
pub(crate) mod sigstore;
pub(crate) use cosign::Signer;
mod env;
mod images;
mod limits;
mod net;
mod poll;
mod report;
mod scoped;
mod scratch;
mod stowage;

pub(crate) use background::Background;
pub(crate) use env::{EngineKind, Env, engine_lock, engine_name, env};
pub(crate) use limits::LimitProxy;
pub(crate) use net::{Registry, Throttle, free_port, fresh_repo, http_get, try_http_get};
pub(crate) use poll::poll;
pub(crate) use report::report;
pub(crate) use scoped::{Churn, ScopedStore};
pub(crate) use scratch::Scratch;
pub(crate) use stowage::{Daemon, entry, is_event};

//! End-to-end tests against the real test environment (`scripts/test-env.sh up`): a hermetic
//! Docker engine and real registries on loopback. One test binary, a module per area.

mod support;

mod check;
mod container;
mod daemon;
mod engine;
mod fleet;
mod layers;
mod limits;
mod metrics;
mod packaging;
mod pin;
mod promises;
mod prune;
mod pull;
mod reliability;
mod service;
mod signatures;

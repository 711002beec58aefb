//! Adapters to the outside world, each behind the narrowest interface the layers above need.

pub mod credentials;
pub mod engine;
pub mod host;
pub mod registry;

//! Adapters to the outside world, each behind the narrowest interface the layers above need.

pub(crate) mod credentials;
pub(crate) mod engine;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod host;
pub(crate) mod probe;
pub(crate) mod registry;

//! Plain data with no I/O, shared by every layer above.

pub(crate) mod failure;
pub(crate) mod image;
pub(crate) mod plain_http;
pub(crate) mod platform;
pub(crate) mod problem;
pub(crate) mod rate_limit;
pub(crate) mod reference;
pub(crate) mod signature;
pub(crate) mod sync;

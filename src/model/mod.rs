//! Plain data with no I/O, shared by every layer above.

pub mod failure;
pub mod image;
pub mod platform;
pub mod problem;
pub mod reference;
pub mod sync;

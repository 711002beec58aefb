//! Locking the plain data that tasks share.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A poison-tolerant lock. Every mutex in stowage guards plain data (maps of strings, the state
/// file's content) that a panicking holder cannot leave half-changed in a way that matters, so
/// a panic elsewhere must not turn every later lock into another panic.
pub(crate) trait Locked<T> {
    /// Locks, whatever a panicking holder left.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

//! Waiting for something that happens a moment later: a log line, an HTTP answer, a metric.

use std::time::{Duration, Instant};

/// Asks `ready` every 100 ms until it gives a value, for at most `limit`; `None` when it never
/// did.
pub(crate) fn poll<T>(limit: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

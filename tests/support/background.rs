//! Work a test keeps going on a thread of its own while it checks something: containers that
//! come and go, images pulled and removed. Stopped when the test says, or when it ends however
//! it ends (a panicking test must not leave it running against the next one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A step run over and over until stopped.
pub(crate) struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Background {
    /// Runs `step` until stopped, counting the times it says it did its work.
    pub(crate) fn run(step: impl Fn(&super::Env) -> bool + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let env = super::env();
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    done += usize::from(step(&env));
                }
                done
            })
        };
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it after the step under way; how many times it did its work.
    pub(crate) fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the background step panicked")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

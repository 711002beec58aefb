//! The images a run is pulling or re-tagging right now, shared with the pruner so it never
//! removes them, and with shutdown so it can say which it abandoned.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::model::sync::Locked;

/// The images currently being pulled, shared so a shutdown can say which it abandoned and so
/// the pruner stays away from them.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<BTreeMap<String, Entry>>>);

/// One image of a run: what it holds, and whether its work has started (queued ones have not).
#[derive(Debug)]
struct Entry {
    content: Vec<String>,
    started: bool,
}

impl InFlight {
    /// The fully qualified names of the pulls under way (started, not queued).
    pub fn snapshot(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.started)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// What the pulls under way are fetching: each configured name, each manifest digest, and
    /// the ID of each image about to be re-tagged. An image holding any of these, under any
    /// name, is part of a pull.
    pub fn names_and_digests(&self) -> HashSet<String> {
        self.lock()
            .iter()
            .flat_map(|(name, e)| std::iter::once(name).chain(&e.content).cloned())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.0.locked()
    }

    /// Enters an image queued for a pull or re-tag: in flight until the guard drops.
    pub fn enter(&self, name: String, content: Vec<String>) -> InFlightGuard {
        self.lock().insert(
            name.clone(),
            Entry {
                content,
                started: false,
            },
        );
        InFlightGuard {
            set: self.clone(),
            name,
        }
    }
}

/// Removes its image from the in-flight set when the pull ends or is dropped.
pub struct InFlightGuard {
    set: InFlight,
    name: String,
}

impl InFlightGuard {
    /// Its work starts (it leaves the queue).
    pub fn start(&self) {
        if let Some(e) = self.set.lock().get_mut(&self.name) {
            e.started = true;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.name);
    }
}

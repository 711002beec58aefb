//! What containers use, and whether the store changed since the plan, kept current through a
//! batch of removals at the cost of one listing.
//!
//! Re-listing every container before each removal (what the pruner did) cost a full listing
//! per removed image: on a store with many containers, most of a prune's engine time. Instead
//! the batch lists once and follows the engine's events from just before the plan's listing
//! on, so nothing falls between the two. A container event, or a lost event stream, means
//! "list the containers again before the next removal". An image event that is not the
//! cycle's own doing (a tag moved, a name added, a pull, an image deleted by someone else)
//! means "look at the plan again before the next removal". Quiet batches cost one listing;
//! busy ones cost a listing per removal, never less safe.

use std::collections::HashSet;
use std::pin::Pin;

use futures_util::{FutureExt, Stream, StreamExt};

use crate::decide::prune_plan::Candidate;
use crate::io::engine::Store;
use crate::model::failure::Failure;
use crate::model::image::{StoreEvent, qualified_id};

type Events<'a> = Pin<Box<dyn Stream<Item = Result<StoreEvent, Failure>> + Send + 'a>>;

/// The images containers use, as of the last listing plus every event since, and whether the
/// store changed since the plan was last checked.
pub(super) struct StoreWatch<'a, S: Store> {
    store: &'a S,
    events: Option<Events<'a>>,
    used: Option<HashSet<String>>,
    /// A container event arrived since the last container listing.
    stale: bool,
    /// How many times the store changed by someone else's hand since the plan: an image event
    /// other than the cycle's own.
    generation: u64,
    /// The images this cycle removes, and their build steps: their untag and delete events are
    /// its own doing (a tag event never is).
    ours: HashSet<String>,
    /// Image events up to this time (nanoseconds) are in the plan's listing already.
    listed_ns: i64,
}

impl<'a, S: Store> StoreWatch<'a, S> {
    /// Starts following the engine's events from `since` (seconds): from before the plan lists
    /// the store, so that nothing between that listing and the removals is missed.
    pub(super) fn start(store: &'a S, since: i64) -> StoreWatch<'a, S> {
        let mut watch = StoreWatch {
            store,
            events: Some(Box::pin(store.store_events(since))),
            used: None,
            stale: true,
            generation: 0,
            ours: HashSet::new(),
            listed_ns: i64::MIN,
        };
        // The first poll sends the subscription, so it is live while the plan is made.
        watch.drain_events();
        watch
    }

    /// Whether a container uses image `id`: by the last listing when no event came since,
    /// else by a new one. `false` when the engine cannot list its containers: the engine's own
    /// refusal to remove a used image is then the guard, as it always is the last.
    pub(super) async fn uses(&mut self, id: &str) -> bool {
        self.drain_events();
        if self.stale || self.used.is_none() {
            self.used = self.store.container_images().await.ok();
            // Without the stream, every removal lists again.
            self.stale = self.events.is_none();
        }
        self.used.as_ref().is_some_and(|used| used.contains(id))
    }

    /// The plan listed the store at `listed_ns`: what happened before is in it. The events of
    /// the second before the subscription, replayed by the engine, are no change.
    pub(super) fn planned_at(&mut self, listed_ns: i64) {
        self.listed_ns = listed_ns;
        self.generation = 0;
    }

    /// The images containers use, as last listed.
    pub(super) fn used(&self) -> HashSet<String> {
        self.used.clone().unwrap_or_default()
    }

    /// Marks `c` and its build steps as this cycle's to remove, before any of its DELETEs.
    pub(super) fn claim(&mut self, c: &Candidate) {
        self.ours.insert(qualified_id(&c.id));
        self.ours.extend(c.steps.iter().map(|s| qualified_id(s)));
    }

    /// How many times the store changed by someone else's hand since the plan: 0 when it did
    /// not. Without the event stream, a new number each time: it may have.
    pub(super) fn generation(&mut self) -> u64 {
        self.drain_events();
        if self.events.is_none() {
            self.generation += 1;
        }
        self.generation
    }

    /// Whether the store changed again since `generation` was read. Without the event stream,
    /// no: the plan just made again over a new listing is as good as a look gets then.
    pub(super) fn changed_since(&mut self, generation: u64) -> bool {
        self.drain_events();
        self.events.is_some() && self.generation != generation
    }

    /// Takes every event that has arrived, without waiting for more.
    fn drain_events(&mut self) {
        let Some(events) = self.events.as_mut() else {
            return;
        };
        while let Some(next) = events.next().now_or_never() {
            match next {
                Some(Ok(StoreEvent::Used { .. })) => self.stale = true,
                Some(Ok(StoreEvent::Named { time_ns, .. })) => {
                    if time_ns > self.listed_ns {
                        self.generation += 1;
                    }
                }
                Some(Ok(
                    StoreEvent::Gone { id, time_ns } | StoreEvent::Unnamed { id, time_ns },
                )) => {
                    if time_ns > self.listed_ns && !self.ours.contains(&qualified_id(&id)) {
                        self.generation += 1;
                    }
                }
                // Ended or failed: from here on, list and check before every removal.
                _ => {
                    self.stale = true;
                    self.events = None;
                    return;
                }
            }
        }
    }
}

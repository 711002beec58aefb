//! What containers use, kept current through a batch of removals at the cost of one listing.
//!
//! Re-listing every container before each removal (what the pruner did) cost a full listing
//! per removed image: on a store with many containers, most of a prune's engine time. Instead
//! the batch lists once and follows the engine's container events from a second before that
//! listing on, so no creation falls between the two. Any event, or a lost event stream, means
//! "list again before the next removal". Quiet batches cost one listing; busy ones cost what
//! they did before, never less safe.

use std::collections::HashSet;
use std::pin::Pin;

use futures_util::{FutureExt, Stream, StreamExt};

use crate::io::engine::Store;
use crate::model::failure::Failure;
use crate::model::image::StoreEvent;

type Events<'a> = Pin<Box<dyn Stream<Item = Result<StoreEvent, Failure>> + Send + 'a>>;

/// The images containers use, as of the last listing plus every event since.
pub(super) struct ContainerWatch<'a, S: Store> {
    store: &'a S,
    events: Option<Events<'a>>,
    used: Option<HashSet<String>>,
    /// An event arrived since the last listing.
    stale: bool,
}

impl<'a, S: Store> ContainerWatch<'a, S> {
    /// Starts following the engine's container events (from a second ago, so that nothing
    /// between now and the first listing is missed).
    pub(super) fn start(store: &'a S) -> ContainerWatch<'a, S> {
        let since = chrono::Utc::now().timestamp() - 1;
        ContainerWatch {
            store,
            events: Some(Box::pin(store.store_events(since))),
            used: None,
            stale: true,
        }
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

    /// Takes every event that has arrived, without waiting for more.
    fn drain_events(&mut self) {
        let Some(events) = self.events.as_mut() else {
            return;
        };
        while let Some(next) = events.next().now_or_never() {
            match next {
                Some(Ok(StoreEvent::Used { .. })) => self.stale = true,
                // An image's deletion (this batch's own, mostly) changes no container.
                Some(Ok(StoreEvent::Gone { .. })) => {}
                // Ended or failed: from here on, list before every removal.
                _ => {
                    self.stale = true;
                    self.events = None;
                    return;
                }
            }
        }
    }
}

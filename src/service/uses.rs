//! Following container events, so each image's last use is known without polling.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::io::engine::Store;
use crate::model::image::StoreEvent;
use crate::model::sync::Locked;
use crate::policy::state::State;
use crate::service::shutdown::Shutdown;

/// How long the event stream may stay silent before it is re-subscribed: bollard's stream can
/// go quiet without an error (bollard #113, why docuum left it), and re-subscribing with
/// `since` loses nothing.
const EVENTS_SILENCE: Duration = Duration::from_secs(60);

/// How often recorded uses are written to the state file.
const USES_FLUSH: Duration = Duration::from_secs(10);

/// Follows container create/start events and records each image's last use, in memory at once
/// and in the state file at most every 10 s, until `stop`. Reconnects after errors and after a
/// minute of silence.
pub async fn watch_uses<S: Store>(
    store: &S,
    state: &Mutex<State>,
    state_file: &std::path::Path,
    stop: &Shutdown,
) {
    use futures_util::StreamExt;
    let mut uses = Uses {
        state,
        state_file,
        pending: BTreeMap::new(),
        gone: BTreeSet::new(),
        flushed: Instant::now(),
    };
    let mut since = chrono::Utc::now().timestamp();
    loop {
        let stream = store.store_events(since);
        tokio::pin!(stream);
        loop {
            let Some(next) = stop
                .until(tokio::time::timeout(EVENTS_SILENCE, stream.next()))
                .await
            else {
                uses.flush().await;
                return;
            };
            match next {
                Ok(Some(Ok(event))) => {
                    since = since.max(event.time());
                    match event {
                        StoreEvent::Used { image, time, .. } => {
                            // The history is by ID; the event names the image as the
                            // container was created with it.
                            let id = match store.image_named(&image).await {
                                Ok(Some(found)) => found.id,
                                _ => image,
                            };
                            uses.seen(id, time).await;
                        }
                        // Podman says "delete" of every removal it was asked for, an
                        // untag or a refusal too: only an image really gone is forgotten.
                        StoreEvent::Gone { id, .. } => {
                            if let Ok(false) = store.has_image(&id).await {
                                uses.gone(id).await;
                            }
                        }
                        StoreEvent::Named { .. } | StoreEvent::Unnamed { .. } => {}
                    }
                }
                Ok(Some(Err(f))) => {
                    warn!("container events: {f}; reconnecting");
                    break;
                }
                // The stream ended, or went silent: subscribe again from the last event.
                Ok(None) | Err(_) => break,
            }
        }
        uses.flush().await;
        if !stop.sleep(Duration::from_secs(1)).await {
            return;
        }
    }
}

/// Image uses seen, and those not yet saved.
struct Uses<'a> {
    state: &'a Mutex<State>,
    state_file: &'a std::path::Path,
    /// Uses not saved to the state file yet.
    pending: BTreeMap<String, i64>,
    /// Images deleted whose history is not yet forgotten in the state file.
    gone: BTreeSet<String>,
    /// When they were last saved.
    flushed: Instant,
}

impl Uses<'_> {
    /// Records a use: in memory at once, on disk when [`USES_FLUSH`] has passed.
    async fn seen(&mut self, id: String, time: i64) {
        debug!(image = %id, time, "image used");
        {
            let mut s = self.state.locked();
            let e = s.last_used.entry(id.clone()).or_insert(time);
            *e = (*e).max(time);
        }
        self.pending.insert(id, time);
        if self.flushed.elapsed() >= USES_FLUSH {
            self.flush().await;
        }
    }

    /// Forgets a deleted image's history: if the same ID comes back (pulled again), it is new
    /// to the store, and `min_age` counts from then. Saved at once: a prune may read it soon.
    async fn gone(&mut self, id: String) {
        debug!(image = %id, "image deleted; its history is forgotten");
        {
            let mut s = self.state.locked();
            s.first_seen.remove(&id);
            s.last_used.remove(&id);
        }
        self.pending.remove(&id);
        self.gone.insert(id);
        self.flush().await;
    }

    /// Saves the pending uses and deletions, merged with the state file on disk.
    async fn flush(&mut self) {
        self.flushed = Instant::now();
        if self.pending.is_empty() && self.gone.is_empty() {
            return;
        }
        let uses = std::mem::take(&mut self.pending);
        let gone = std::mem::take(&mut self.gone);
        let result = State::update(self.state_file, |s| {
            for id in &gone {
                s.first_seen.remove(id);
                s.last_used.remove(id);
            }
            for (id, t) in &uses {
                let e = s.last_used.entry(id.clone()).or_insert(*t);
                *e = (*e).max(*t);
            }
        })
        .await;
        match result {
            Ok(saved) => *self.state.locked() = saved,
            Err(e) => warn!("cannot save image uses to the state file: {e}"),
        }
    }
}

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
//!
//! The same events tell, once the batch is done, whether a container was created while it
//! ran: the engine checks for containers and then deletes, with no lock between, so a
//! `docker create` in that instant can keep an image the engine then deletes. Only then are
//! the containers listed again to find and heal such a race.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use crate::decide::prune_plan::Candidate;
use crate::io::engine::Store;
use crate::model::failure::Failure;
use crate::model::image::{StoreEvent, qualified_id};

/// The engine's events as they arrive, read by a task of their own.
///
/// Why a task: the pruner looks at its events between DELETEs, without waiting. Polled only
/// then (with `now_or_never`, as it was), the stream's HTTP body moved one chunk per look, and
/// dockerd sends each event as a chunk of its own: a burst of events reached the pruner
/// seconds late, after removals the events should have stopped. Read by a task, every event
/// is in the channel as soon as the engine has sent it.
struct Events {
    received: UnboundedReceiver<Result<StoreEvent, Failure>>,
    /// Stops reading when the watch is dropped.
    _reader: AbortOnDropHandle<()>,
}

impl Events {
    fn follow<S: Store>(store: &S, since: i64) -> Events {
        let stream = store.store_events(since);
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let failed = event.is_err();
                if sender.send(event).is_err() || failed {
                    return;
                }
            }
        });
        Events {
            received,
            _reader: AbortOnDropHandle::new(reader),
        }
    }
}

/// The images containers use, as of the last listing plus every event since, and whether the
/// store changed since the plan was last checked.
pub(super) struct StoreWatch<'a, S: Store> {
    store: &'a S,
    events: Option<Events>,
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
    /// A container was created since the watch started.
    created: bool,
    /// The images whose deletion the engine has announced since the watch started.
    deleted: HashSet<String>,
    /// The names tags and pulls gave images since the plan, each to the image it was given to
    /// last, and whether it still names it (no untag of it since), in the order the engine
    /// told them: on Podman, one given while the engine deletes the image goes with it, and
    /// only the events say so.
    added: HashMap<String, (String, bool)>,
    /// The time (seconds) of the last event read: a stream followed again starts there.
    last_event_s: i64,
    /// How many times the events were followed again.
    refollows: usize,
    /// When to follow them again, while there is no stream.
    refollow_at: Option<tokio::time::Instant>,
    /// The batch went without a stream for a while: an engine that restarted replays nothing
    /// of before, so its events may have missed a container.
    gap: bool,
}

/// When the engine's events end, how long the cycle waits before following them again, each
/// time they do. Podman 4.3's stream (events written to a file) ends in the middle of a busy
/// prune: followed again at once, from the second of the last event read, it misses nothing
/// (without that, every removal listed the store again, three requests, and Podman 4.3's
/// listing fails while images go: bench prunes of 100 images took 130 to 190 s after a first
/// of 42 s). A stream that keeps ending is an engine that went away: followed again after
/// longer and longer, 15 s in all (a restart took 5 to 10 s in the fault scenarios), each
/// removal meanwhile looking at the store again. Past these, the cycle goes on without.
const REFOLLOW_AFTER: [Duration; 7] = [
    Duration::ZERO,
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// How long, at most, the engine's announcement of a batch's last deletion may take to arrive
/// once its DELETE returned. Past it the containers are listed all the same: the events are
/// late, and the batch cannot tell from them whether a container was created, nor which names
/// Podman deleted with an image. Podman 4.3 under a busy prune announced them up to 1.5 s late
/// (p99 1.05 to 1.27 s, an adversarial run); 2 s lost names given 2.5 s before their event
/// arrived. Waited for only when the events are late.
const DELETIONS_ANNOUNCED_WITHIN: Duration = Duration::from_secs(5);

/// How long after the batch's last deletion was announced a container created in that
/// instant may still be announced. A `docker create` that found the image before its deletion
/// registers the container after it, and says so later still: on Docker 28's containerd store,
/// 15 of 34 such containers were announced only after the deletion (the short fault profile's
/// race scenario), and an adversarial run on two loaded cores saw announcements up to 592 ms
/// after it on Docker 20.10 and 369 ms on Docker 26 (6 December 2026). Waited on events,
/// without listing anything, and only after a batch that removed something.
const CREATED_ANNOUNCED_WITHIN: Duration = Duration::from_secs(1);

impl<'a, S: Store> StoreWatch<'a, S> {
    /// Starts following the engine's events from `since` (seconds): from before the plan lists
    /// the store, so that nothing between that listing and the removals is missed.
    pub(super) fn start(store: &'a S, since: i64) -> StoreWatch<'a, S> {
        StoreWatch {
            store,
            events: Some(Events::follow(store, since)),
            used: None,
            stale: true,
            generation: 0,
            ours: HashSet::new(),
            listed_ns: i64::MIN,
            created: false,
            deleted: HashSet::new(),
            added: HashMap::new(),
            last_event_s: since,
            refollows: 0,
            refollow_at: None,
            gap: false,
        }
    }

    /// Whether a container uses image `id`: by the last listing when no event came since,
    /// else by a new one. `false` when the engine cannot list its containers: the engine's own
    /// refusal to remove a used image is then the guard, as it always is the last.
    pub(super) async fn uses(&mut self, id: &str) -> bool {
        self.drain_events().await;
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
    pub(super) async fn generation(&mut self) -> u64 {
        self.drain_events().await;
        if self.events.is_none() {
            self.generation += 1;
        }
        self.generation
    }

    /// Whether the store changed again since `generation` was read. Without the event stream,
    /// no: the plan just made again over a new listing is as good as a look gets then.
    pub(super) async fn changed_since(&mut self, generation: u64) -> bool {
        self.drain_events().await;
        self.events.is_some() && self.generation != generation
    }

    /// The names given to image `id` since the plan that still named it at its last event, as
    /// far as the events read so far say.
    pub(super) fn names_added(&self, id: &str) -> Vec<String> {
        let id = qualified_id(id);
        let mut names: Vec<String> = self
            .added
            .iter()
            .filter(|(_, (to, still))| *still && *to == id)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether a container may have been created from an image the batch removed, once the
    /// batch is done: the caller lists the containers again when so.
    ///
    /// The engine announces each deletion after its check for containers, and a container once
    /// it has it, in the order they happened: once the announcements of the batch's own
    /// deletions (`removed`) have arrived, every container the engine had by then has been
    /// told. A container whose creation raced the last deletion can be announced a moment
    /// later: the events of [`CREATED_ANNOUNCED_WITHIN`] more are taken too. Without events,
    /// or when they are late, the answer is yes.
    pub(super) async fn container_created(&mut self, removed: &[&str]) -> bool {
        let deadline = tokio::time::Instant::now() + DELETIONS_ANNOUNCED_WITHIN;
        let announced = |w: &Self| {
            removed
                .iter()
                .all(|id| w.deleted.contains(&qualified_id(id)))
        };
        self.drain_events().await;
        while self.events.is_some() && !announced(self) {
            let Some(events) = self.events.as_mut() else {
                break;
            };
            match tokio::time::timeout_at(deadline, events.received.recv()).await {
                Ok(event) => self.apply(event),
                Err(_) => {
                    warn!(
                        "the engine did not announce the batch's deletions within {:?}; \
                         listing its containers (a name given to an image as the engine \
                         deleted it may go unseen)",
                        DELETIONS_ANNOUNCED_WITHIN
                    );
                    return true;
                }
            }
        }
        // The whole tail even when a creation was announced already: the containers are
        // listed after it, so that those registered in it are listed too.
        let tail = tokio::time::Instant::now() + CREATED_ANNOUNCED_WITHIN;
        while let Some(events) = self.events.as_mut() {
            match tokio::time::timeout_at(tail, events.received.recv()).await {
                Ok(event) => self.apply(event),
                Err(_) => break,
            }
        }
        if self.events.is_none() {
            // Without events, only a listing made after that moment shows a container
            // registered a moment after the last deletion (Docker 20.10: about 20 ms after it,
            // found by an adversarial run with the engine restarted mid-prune).
            tokio::time::sleep(CREATED_ANNOUNCED_WITHIN).await;
            return true;
        }
        self.created || self.gap
    }

    /// Takes every event that has arrived, without waiting for more. It yields first, so that
    /// the reader has taken what the engine sent even where the runtime has one thread.
    async fn drain_events(&mut self) {
        self.refollow_if_due();
        tokio::task::yield_now().await;
        while let Some(events) = self.events.as_mut() {
            match events.received.try_recv() {
                Err(TryRecvError::Empty) => return,
                Ok(event) => self.apply(Some(event)),
                Err(TryRecvError::Disconnected) => self.apply(None),
            }
        }
    }

    /// One event, or the end of the stream (`None`).
    fn apply(&mut self, event: Option<Result<StoreEvent, Failure>>) {
        if let Some(Ok(e)) = &event {
            self.last_event_s = self.last_event_s.max(e.time());
        }
        match event {
            Some(Ok(StoreEvent::Used {
                created, time_ns, ..
            })) => {
                self.stale = true;
                // The events of the second before the subscription are replayed: a container
                // created before the plan's listing is in it.
                self.created |= created && time_ns > self.listed_ns;
            }
            Some(Ok(StoreEvent::Named { id, time_ns, name })) => {
                if time_ns > self.listed_ns {
                    debug!(image = %id, "the store changed since the plan: named");
                    self.generation += 1;
                    if let Some(name) = name {
                        self.added.insert(name, (qualified_id(&id), true));
                    }
                }
            }
            Some(Ok(StoreEvent::Gone { id, time_ns })) => {
                let id = qualified_id(&id);
                if time_ns > self.listed_ns {
                    if !self.ours.contains(&id) {
                        debug!(image = %id, "the store changed since the plan: deleted");
                        self.generation += 1;
                    }
                    // Not a replayed deletion of the same ID from before the plan (an image
                    // pulled again since has the same ID).
                    self.deleted.insert(id);
                }
            }
            Some(Ok(StoreEvent::Unnamed { id, time_ns, name })) => {
                // Untagged by its owner: not a name the image had when deleted.
                if let Some(given) = name.and_then(|n| self.added.get_mut(&n))
                    && given.0 == qualified_id(&id)
                {
                    given.1 = false;
                }
                if time_ns > self.listed_ns && !self.ours.contains(&qualified_id(&id)) {
                    debug!(image = %id, "the store changed since the plan: untagged");
                    self.generation += 1;
                }
            }
            // Until they are followed again, and for good past the last try: list and check
            // before every removal.
            Some(Err(_)) | None => {
                let why = match event {
                    Some(Err(f)) => f.to_string(),
                    _ => "the engine closed them".to_owned(),
                };
                self.stale = true;
                self.events = None;
                let Some(wait) = REFOLLOW_AFTER.get(self.refollows) else {
                    debug!(
                        "the engine's events ended ({why}): each removal looks at the store again"
                    );
                    return;
                };
                debug!(
                    since = self.last_event_s,
                    ?wait,
                    "the engine's events ended ({why}); following them again"
                );
                self.refollows += 1;
                self.gap |= !wait.is_zero();
                self.refollow_at = Some(tokio::time::Instant::now() + *wait);
                self.refollow_if_due();
            }
        }
    }

    /// Follows the events again once it is time, from the second of the last event read: what
    /// came after it is replayed, and what is replayed of that second is no change to a watch
    /// that already had it (a deletion of its own, a name it already counted once more).
    fn refollow_if_due(&mut self) {
        if self.events.is_none()
            && self
                .refollow_at
                .is_some_and(|at| tokio::time::Instant::now() >= at)
        {
            self.refollow_at = None;
            self.events = Some(Events::follow(self.store, self.last_event_s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::fake::FakeEngine;

    /// Lets the reader task see its stream end.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// The names given to images since the plan, as the events tell them in order: a name
    /// counts for the image it was given to last, and not once its owner untagged it again.
    #[tokio::test(start_paused = true)]
    async fn a_name_given_counts_for_the_image_it_was_given_to_last_while_it_names_it() {
        use crate::io::fake::Churn;
        let engine = FakeEngine::default();
        for id in ["sha256:a", "sha256:b", "sha256:c"] {
            engine.add(id, &[&format!("r.example/{}:1", &id[7..])], &[]);
        }
        let mut watch = StoreWatch::start(&engine, 0);
        watch.planned_at(0);
        settle().await;
        let tag = |tag: &str, to: &str| Churn::Tag {
            tag: tag.into(),
            to: to.into(),
        };
        // Moved from a to b: b's.
        engine.churn_now(tag("r.example/shared:x", "sha256:a"));
        engine.churn_now(tag("r.example/shared:x", "sha256:b"));
        // Given to c and untagged by its owner: nobody's.
        engine.churn_now(tag("r.example/mine:y", "sha256:c"));
        engine.churn_now(Churn::Untag {
            name: "r.example/mine:y".into(),
        });
        // Given to c and kept.
        engine.churn_now(tag("r.example/kept:z", "sha256:c"));
        settle().await;
        watch.drain_events().await;
        assert!(watch.names_added("sha256:a").is_empty());
        assert_eq!(watch.names_added("sha256:b"), ["r.example/shared:x"]);
        assert_eq!(watch.names_added("sha256:c"), ["r.example/kept:z"]);
    }

    /// An event stream the engine ends is followed again at once, three times: the watch still
    /// says "no change" (without a stream it must say "maybe" every time, and each removal
    /// lists the store again).
    #[tokio::test(start_paused = true)]
    async fn events_that_end_are_followed_again_at_once_a_few_times() {
        let engine = FakeEngine::default();
        let mut watch = StoreWatch::start(&engine, 0);
        watch.planned_at(0);
        for _ in 0..3 {
            settle().await;
            engine.end_event_streams();
            settle().await;
            assert_eq!(watch.generation().await, 0);
            assert!(!watch.changed_since(0).await);
        }
        // The fourth time, not at once: meanwhile, "maybe" every time.
        engine.end_event_streams();
        settle().await;
        let first = watch.generation().await;
        assert!(first > 0 && watch.generation().await > first);
        assert!(watch.container_created(&[]).await);
    }

    /// An engine that went away (its events fail at once) is followed again after a while, and
    /// again after longer; once it is back, the watch says "no change" again, but that the
    /// batch may have missed a container (the engine replays nothing of before a restart).
    /// Past the last try, it goes on without.
    #[tokio::test(start_paused = true)]
    async fn the_events_of_an_engine_that_comes_back_are_followed_again() {
        let engine = FakeEngine::default();
        let mut watch = StoreWatch::start(&engine, 0);
        watch.planned_at(0);
        settle().await;
        engine.set_events_down(true);
        engine.end_event_streams();
        // The tries at once fail at once: then no stream, "maybe" every time, until the next.
        for _ in 0..10 {
            settle().await;
            watch.generation().await;
        }
        assert_eq!(watch.refollows, 4);
        let g = watch.generation().await;
        assert!(g > 0 && watch.generation().await > g);
        // Back a moment before the next try (the 5th, 1 s after the 4th), which follows it.
        engine.set_events_down(false);
        tokio::time::advance(REFOLLOW_AFTER[3]).await;
        let g = watch.generation().await;
        settle().await;
        assert_eq!(watch.generation().await, g, "no change once followed again");
        assert!(!watch.changed_since(g).await);
        assert!(
            watch.container_created(&[]).await,
            "the gap may hide a container"
        );
        // Gone again: each next try a while later, then none.
        engine.set_events_down(true);
        engine.end_event_streams();
        for wait in &REFOLLOW_AFTER[4..] {
            settle().await;
            watch.generation().await;
            assert!(watch.events.is_none(), "no stream for {wait:?}");
            tokio::time::advance(*wait).await;
        }
        settle().await;
        watch.generation().await;
        settle().await;
        watch.generation().await;
        assert_eq!(watch.refollows, REFOLLOW_AFTER.len());
        engine.set_events_down(false);
        tokio::time::advance(Duration::from_secs(60)).await;
        let g = watch.generation().await;
        assert!(
            watch.generation().await > g,
            "followed again past the last try"
        );
    }
}

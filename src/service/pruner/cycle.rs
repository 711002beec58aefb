//! One prune cycle carried out: each planned removal re-checked right before it, a few at a
//! time (children before parents) and never forced, races with a container's creation healed,
//! then the build cache.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use tracing::{debug, error, info, warn};

use super::heal::LateHeal;
use super::remove::{Exact, Stop, remove_exactly};
use super::watch::StoreWatch;
use super::{AgainstPlan, Cycle, Planned, Pruner, Race, Removal, RemovalResult, Replan};
use crate::decide::prune_plan::{Candidate, Protection, PruneInput, PrunePlan, being_pulled};
use crate::decide::removal::{Taken, audit, refused_for_a_container};
use crate::decide::usage::Usage;
use crate::io::engine::Store;
use crate::model::failure::Failure;
use crate::model::image::BuildCache;
use crate::model::sync::Locked;
use crate::policy::state::{RemovedImage, State};
use crate::service::clock;
use crate::service::progress::Step;

/// Removals under way at once when `prune.pause` is zero. Measured on Docker 20.10 (2 cores),
/// deleting 420 names of 60 images: 1 at a time 0.61-0.68 s, 2 0.51 s, 4 0.42-0.47 s, 8 0.44 s.
/// The engine gains up to about four; more only queue on its locks.
const REMOVALS_AT_ONCE: usize = 4;

/// A removal under way: its place in the plan, and the candidate (for its parent).
struct Running<'a> {
    index: usize,
    candidate: &'a Candidate,
    removal: Pin<Box<dyn Future<Output = Removal> + Send + 'a>>,
}

impl<'a> Running<'a> {
    fn new(
        index: usize,
        candidate: &'a Candidate,
        removal: impl Future<Output = Removal> + Send + 'a,
    ) -> Self {
        Running {
            index,
            candidate,
            removal: Box::pin(removal),
        }
    }
}

impl Future for Running<'_> {
    type Output = (usize, Removal);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        self.removal.as_mut().poll(cx).map(|r| (index, r))
    }
}

/// Whether a window that `closes` then has closed.
fn closed(closes: Option<DateTime<Utc>>) -> bool {
    closes.is_some_and(|c| clock::now() >= c)
}

/// How many times in a row a removal makes the plan again while the store keeps changing,
/// before it goes ahead on the last one.
const REPLANS_AT_MOST: usize = 5;

impl<S: Store> Pruner<'_, S> {
    /// One cycle: plan, record what was seen, and remove (unless `dry_run`).
    pub async fn cycle(&self, dry_run: bool) -> Result<Cycle, Failure> {
        self.cycle_within(dry_run, None).await
    }

    /// [`Self::cycle`] in a window that `closes` then: the removal under way when it closes
    /// finishes, and no other starts.
    pub(crate) async fn cycle_within(
        &self,
        dry_run: bool,
        closes: Option<DateTime<Utc>>,
    ) -> Result<Cycle, Failure> {
        let started = Instant::now();
        // Following the store's events from before its listing: whatever changes between the
        // plan and a removal is seen by then (see [`StoreWatch`]).
        let watch =
            (!dry_run).then(|| StoreWatch::start(self.store, chrono::Utc::now().timestamp() - 1));
        let Planned { plan, usage, input } = self.planned().await?;
        let Some(mut watch) = watch else {
            return Ok(Cycle {
                plan,
                removals: Vec::new(),
                late_races: Vec::new(),
                still_lost: Vec::new(),
                build_cache_freed: None,
            });
        };
        for k in &plan.keep {
            if k.protection != Protection::NotSelected {
                debug!(image = %k.id, names = %k.names.join(", "), protection = %k.protection.name(), "kept");
            }
        }
        watch.planned_at(usage.observed_at_ns);
        self.record(&usage).await;
        // Before the removals: a tag moved since onto an image this cycle removes is still
        // there to say that it names another image now, and stays off the old one.
        // On the engine's clock, as the times of the removals remembered and of containers.
        let listed_at = usage.observed_at_ns.div_euclid(1_000_000_000) + self.store.clock_ahead();
        let late = self.heal_late(&input.in_use, listed_at).await;
        let removals = self.remove_all(&plan, &input, watch, closes).await;
        self.forget(&removals, &late).await;
        let build_cache_freed = if closed(closes) {
            None
        } else {
            self.prune_build_cache().await
        };
        let cycle = Cycle {
            plan,
            removals,
            late_races: late.found,
            still_lost: late.still_lost,
            build_cache_freed,
        };
        log_cycle(&cycle, started);
        Ok(cycle)
    }

    /// Removes the planned images in order, then heals what raced. With no pause, up to
    /// [`REMOVALS_AT_ONCE`] at a time (never an image while one of its children is still being
    /// removed); with a pause, one at a time, pausing between them.
    async fn remove_all(
        &self,
        plan: &PrunePlan,
        input: &PruneInput,
        watch: StoreWatch<'_, S>,
        closes: Option<DateTime<Utc>>,
    ) -> Vec<Removal> {
        let watch = tokio::sync::Mutex::new(watch);
        let replans = tokio::sync::Mutex::new(None);
        let width = if self.settings.pause.is_zero() {
            REMOVALS_AT_ONCE
        } else {
            1
        };
        let mut results: Vec<Option<Removal>> = vec![None; plan.remove.len()];
        let mut running = FuturesUnordered::new();
        for (n, c) in plan.remove.iter().enumerate() {
            self.progress.step(Step::Removing(self.settings.pause));
            // A slot, and no child of this image still on its way out.
            while running.len() >= width
                || running
                    .iter()
                    .any(|r: &Running<'_>| r.candidate.parent.as_ref() == Some(&c.id))
            {
                let Some((i, removal)) = running.next().await else {
                    break;
                };
                results[i] = Some(removal);
            }
            let paused = n == 0 || self.settings.pause.is_zero() || {
                // A stop during the pause starts no removal either.
                self.stop.sleep(self.settings.pause).await
            };
            if !paused || self.stop.is_triggered() {
                results[n] = Some(Removal::new(c, RemovalResult::Skipped, None));
                continue;
            }
            if closed(closes) {
                let why = "the prune window closed";
                results[n] = Some(Removal::new(c, RemovalResult::Skipped, Some(why.into())));
                continue;
            }
            running.push(Running::new(
                n,
                c,
                self.remove_one(c, input, &watch, &replans),
            ));
        }
        while let Some((i, removal)) = running.next().await {
            results[i] = Some(removal);
        }
        let mut results: Vec<Removal> = results.into_iter().flatten().collect();
        let removed: Vec<&str> = results
            .iter()
            .filter(|r| r.result == RemovalResult::Removed)
            .map(|r| r.candidate.id.as_str())
            .collect();
        if removed.is_empty() {
            return results;
        }
        // Once the engine has announced the batch's deletions: what its events said by then.
        let (created, added) = {
            let mut watch = watch.lock().await;
            let created = watch.container_created(&removed).await;
            // Of each removal's image and of the build steps removed with it.
            let added: Vec<Vec<(String, Vec<String>)>> = results
                .iter()
                .map(|r| {
                    std::iter::once(&r.candidate.id)
                        .chain(&r.steps_removed)
                        .map(|id| (id.clone(), watch.names_added(id)))
                        .filter(|(_, names)| !names.is_empty())
                        .collect()
                })
                .collect();
            (created, added)
        };
        // Listed again only when a container was created while the batch ran.
        if created && let Ok(used) = self.store.container_images().await {
            self.heal_races(&used, &mut results).await;
        }
        self.heal_names_added(added, &mut results).await;
        results
    }

    /// Removes one image unless a container or a pull took it up since the plan.
    async fn remove_one(
        &self,
        c: &Candidate,
        input: &PruneInput,
        watch: &tokio::sync::Mutex<StoreWatch<'_, S>>,
        replans: &Replans,
    ) -> Removal {
        {
            let mut w = watch.lock().await;
            if w.uses(&c.id).await {
                // The protection working, not a failure: the image is kept, and says why.
                let why = "kept: a container started using it since the plan";
                info!(image = %c.id, names = %c.names.join(", "), "{why}");
                return Removal::new(c, RemovalResult::Skipped, Some(why.into()));
            }
            w.claim(c);
        }
        let replanned_steps = match self.still_planned(c, input, watch, replans).await {
            Ok(steps) => steps,
            Err(stopped) => return stopped,
        };
        // The steps as the store is now: one may have become another image's base.
        let replanned;
        let c = match replanned_steps {
            Some(steps) => {
                replanned = Candidate { steps, ..c.clone() };
                &replanned
            }
            None => c,
        };
        // A pull may have started since the plan: leave its image alone. Checked last, with
        // no await between it and the removal.
        let pulling = self.in_flight.names_and_digests();
        if being_pulled(&c.id, c.references.iter(), &pulling) {
            let why = "a pull of it started";
            return Removal::new(c, RemovalResult::Skipped, Some(why.into()));
        }
        let exact = remove_exactly(self.store, c).await;
        let mut removal = outcome_of(c, &exact);
        for tag in &exact.moved {
            info!(image = %c.id, name = %tag, "left alone: the name no longer names the image");
        }
        let audit = audit(&c.id, &c.references, &exact.answers, &exact.steps);
        removal.moved = exact.moved;
        removal.untagged = audit.untagged;
        removal.steps_removed = audit.steps_removed;
        for t in audit.taken {
            removal
                .against_plan
                .push(self.put_back(c, exact.gone, t).await);
        }
        removal
    }

    /// Puts back what a removal took against its plan: pulls it by a digest it had and points
    /// its tags at it again (names taken from the planned image, while it is still there, are
    /// only pointed at it again; another image's, by the digest it lost, which is local, so
    /// the pull re-creates the reference). Logged as an error either way: it should never
    /// happen.
    async fn put_back(&self, c: &Candidate, planned_gone: bool, taken: Taken) -> AgainstPlan {
        let tags: Vec<String> = taken.tags().cloned().collect();
        let planned_names = taken.image.is_none() && !taken.another;
        let outcome = if planned_names && !planned_gone {
            self.retag(&c.id, &tags).await
        } else {
            let mut digests: Vec<String> = taken.digests().cloned().collect();
            if planned_names {
                digests.extend(c.references.iter().filter(|r| r.contains('@')).cloned());
            }
            match self.pull_back(&digests, &tags).await {
                Ok(()) => self.back_as_it_was(taken.image.as_deref()).await,
                Err(error) => Err(error),
            }
        };
        let outcome = match outcome {
            Ok(()) => {
                error!(planned = %c.id, image = %taken.image.as_deref().unwrap_or("-"), names = %taken.names.join(", "), "the engine removed what the plan did not name; put back");
                Race::Healed
            }
            Err(error) => {
                error!(planned = %c.id, image = %taken.image.as_deref().unwrap_or("-"), names = %taken.names.join(", "), "the engine removed what the plan did not name, and it cannot be put back: {error}");
                Race::Lost { error }
            }
        };
        AgainstPlan { taken, outcome }
    }

    /// Whether the image a pull back was to bring back (`None`: the planned image's names only)
    /// is the one the engine has now. A `name@digest` of a multi-platform index brings back the
    /// image for the engine's own platform: the image of another platform that was taken is
    /// not back (an adversarial run on Podman 5.8 saw such a loss reported as healed).
    async fn back_as_it_was(&self, taken: Option<&str>) -> Result<(), String> {
        let Some(id) = taken else {
            return Ok(());
        };
        match self.store.has_image(id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "pulled back by its digest, the engine has another image ({id} is not back: \
                 an image of another platform?)"
            )),
            Err(f) => Err(format!("{id} cannot be looked at: {f}")),
        }
    }

    /// Points each of `tags` at image `id`.
    pub(super) async fn retag(&self, id: &str, tags: &[String]) -> Result<(), String> {
        for tag in tags {
            self.store
                .retag(id, tag)
                .await
                .map_err(|f| format!("{tag}: {f}"))?;
        }
        Ok(())
    }

    /// Whether `c` is still to be removed. Someone else changed the store since the plan (a
    /// tag moved onto it or away, a name added, a child built, an image of its repository
    /// removed): the plan is made again, once per change and shared by the removals under way,
    /// and again while changes arrive during that, so that no removal acts on a plan older
    /// than the last change it could know of. `Err`: the removal as it ends here.
    async fn still_planned(
        &self,
        c: &Candidate,
        input: &PruneInput,
        watch: &tokio::sync::Mutex<StoreWatch<'_, S>>,
        replans: &Replans,
    ) -> Result<Option<Vec<String>>, Removal> {
        for _ in 0..REPLANS_AT_MOST {
            let (generation, in_use) = {
                let mut w = watch.lock().await;
                (w.generation().await, w.used())
            };
            if generation == 0 {
                return Ok(None);
            }
            let mut replanned = replans.lock().await;
            if replanned.as_ref().is_none_or(|(g, _)| *g != generation) {
                *replanned = Some((generation, self.replan(input, in_use).await));
            }
            match replanned.as_ref().map(|(_, r)| r) {
                Some(Err(f)) => {
                    let why = format!(
                        "the store changed since the plan, and cannot be looked at again: {f}"
                    );
                    warn!(image = %c.id, names = %c.names.join(", "), "removal failed: {why}");
                    return Err(Removal::new(c, RemovalResult::Failed, Some(why)));
                }
                Some(Ok(replan)) => {
                    if let Some(why) = replan.kept(&c.id) {
                        info!(image = %c.id, names = %c.names.join(", "), "kept: the store changed since the plan ({why})");
                        let why = format!("kept: the store changed since the plan ({why})");
                        return Err(Removal::new(c, RemovalResult::Skipped, Some(why)));
                    }
                }
                None => {}
            }
            let steps = steps_now(&replanned, &c.id);
            drop(replanned);
            // Nothing new arrived while the plan was made again: it stands.
            if !watch.lock().await.changed_since(generation).await {
                return Ok(steps);
            }
        }
        // A store that never stops changing (a busy CI host) must not stop pruning, and a disk
        // from being kept under its watermark: the last plan, a moment old, stands. The looks
        // at the image's own names, and the engine's refusals, still hold.
        debug!(image = %c.id, "the store kept changing while the plan was made again; going on");
        Ok(steps_now(&*replans.lock().await, &c.id))
    }

    /// Says which build cache settings the engine cannot honour, once at start (the daemon's,
    /// a `stowage prune`'s): every cycle leaves them out of its request (see [`BuildCache`]).
    pub(crate) fn warn_if_build_cache_ignored(&self) {
        let age = self.settings.build_cache_max_age.is_some();
        let size = self.settings.build_cache_max_size.is_some();
        match self.store.build_cache() {
            BuildCache::None if age || size => warn!(
                "prune.build_cache_max_age and build_cache_max_size do nothing on Podman: its \
                 builds leave their layers as images, which the prune's rules cover"
            ),
            BuildCache::ByAge if size => warn!(
                "prune.build_cache_max_size needs Docker 28 (API 1.48) or later: this engine \
                 would ignore it and prune every unused build cache record, so only \
                 build_cache_max_age applies"
            ),
            _ => {}
        }
    }

    /// The build cache (CI hosts), after the images: the bytes freed, when it ran.
    async fn prune_build_cache(&self) -> Option<u64> {
        let settings = self.settings;
        // Only what the engine honours: asked for a size it ignores, an engine older than API
        // 1.48 prunes every unused record (the daemon said so at start).
        let (max_age, max_size) = match self.store.build_cache() {
            BuildCache::None => (None, None),
            BuildCache::ByAge => (settings.build_cache_max_age, None),
            BuildCache::ByAgeAndSize => {
                (settings.build_cache_max_age, settings.build_cache_max_size)
            }
        };
        if (max_age.is_none() && max_size.is_none()) || self.stop.is_triggered() {
            return None;
        }
        match self.store.prune_build_cache(max_age, max_size).await {
            Ok(bytes) => {
                info!(bytes, "build cache pruned");
                Some(bytes)
            }
            Err(f) => {
                warn!("build cache pruning failed: {f}");
                None
            }
        }
    }

    /// Forgets the history of every image the removals deleted: an image pulled again is new
    /// to the store, and `min_age` counts from its return, not from its first arrival. Each
    /// image removed without a race is remembered instead, for a later cycle to put back if a
    /// container turns out to use it ([`crate::decide::late`]); of the removals remembered
    /// before, those `late` settled are forgotten, and those it could not put back marked.
    async fn forget(&self, removals: &[Removal], late: &LateHeal) {
        let removed: Vec<&Removal> = removals
            .iter()
            .filter(|r| r.result == RemovalResult::Removed)
            .collect();
        let gone: Vec<&String> = removed
            .iter()
            .map(|r| &r.candidate.id)
            .chain(
                removals
                    .iter()
                    .flat_map(|r| r.against_plan.iter())
                    .filter_map(|a| a.taken.image.as_ref()),
            )
            .collect();
        if gone.is_empty() && late.settled.is_empty() && late.lost().next().is_none() {
            return;
        }
        // On the engine's clock, which dates the containers it is compared with.
        let at = Utc::now().timestamp() + self.store.clock_ahead();
        let result = State::update(&self.config.state_file, |s| {
            for id in &late.settled {
                s.removed.remove(id);
            }
            for id in late.lost() {
                if let Some(image) = s.removed.get_mut(id) {
                    image.lost = true;
                }
            }
            for id in &gone {
                s.first_seen.remove(*id);
                s.last_used.remove(*id);
            }
            // A race healed already was dealt with; one lost (said now) is tried again by the
            // next cycles, as a late one is, while a container uses the image.
            for r in removed
                .iter()
                .filter(|r| !matches!(r.race, Some(Race::Healed)))
            {
                let c = &r.candidate;
                let image = RemovedImage {
                    names: c.names.clone(),
                    references: c.references.clone(),
                    at,
                    lost: r.race.is_some(),
                };
                s.removed.insert(c.id.clone(), image);
            }
        })
        .await;
        match result {
            Ok(saved) => *self.state.locked() = saved,
            Err(e) => warn!(
                path = %self.config.state_file.display(),
                "cannot save the state file ({e}); an image pulled again keeps its first age, \
                 and a container created late from a removed image is not looked for"
            ),
        }
    }

    /// Saves the usage history (merged with the state file on disk).
    pub(super) async fn record(&self, usage: &Usage) {
        let result = State::update(&self.config.state_file, |s| {
            s.first_seen = usage
                .first_seen
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            // Merge, latest wins: container events may have been saved since the plan.
            let mut last_used: BTreeMap<String, i64> = s
                .last_used
                .iter()
                .filter(|(id, _)| usage.first_seen.contains_key(*id))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for (id, t) in &usage.last_used {
                let e = last_used.entry(id.clone()).or_insert(*t);
                *e = (*e).max(*t);
            }
            s.last_used = last_used;
            s.watching_since.get_or_insert(usage.watching_since);
            s.observed_at_ns = Some(usage.observed_at_ns);
        })
        .await;
        match result {
            Ok(saved) => *self.state.locked() = saved,
            Err(e) => warn!(
                path = %self.config.state_file.display(),
                "cannot save the state file ({e}); image ages restart from now"
            ),
        }
    }
}

/// The plan made again during a cycle, with the store change it was made for; shared by the
/// removals under way.
type Replans = tokio::sync::Mutex<Option<(u64, Result<Replan, Failure>)>>;

/// The build steps that go with image `id` by the plan made again, if there is one.
fn steps_now(replanned: &Option<(u64, Result<Replan, Failure>)>, id: &str) -> Option<Vec<String>> {
    replanned
        .as_ref()
        .and_then(|(_, r)| r.as_ref().ok())
        .and_then(|r| r.steps(id))
        .map(<[String]>::to_vec)
}

/// How a removal ended, by what the engine did, logged.
fn outcome_of(c: &Candidate, exact: &Exact) -> Removal {
    match (&exact.stop, exact.gone) {
        (_, true) => {
            info!(image = %c.id, names = %c.names.join(", "), bytes = c.size, rule = %c.rule.name(), "removed");
            Removal::new(c, RemovalResult::Removed, None)
        }
        (Some(stop @ Stop::GainedNames(_)), false) => {
            info!(image = %c.id, names = %c.names.join(", "), "{stop}");
            Removal::new(c, RemovalResult::Skipped, Some(stop.to_string()))
        }
        (Some(Stop::Failed(f)), false) if refused_for_a_container(&f.detail) => {
            let why = "kept: a container started using it since the plan (the engine refused \
                       its removal)";
            info!(image = %c.id, names = %c.names.join(", "), detail = %f.detail, "{why}");
            Removal::new(c, RemovalResult::Skipped, Some(why.into()))
        }
        (Some(Stop::Failed(f)), false) => {
            warn!(image = %c.id, names = %c.names.join(", "), "removal failed: {f}");
            Removal::new(c, RemovalResult::Failed, Some(f.detail.clone()))
        }
        (None, false) => {
            let why = "the engine kept it (a child image still holds it)";
            warn!(image = %c.id, names = %c.names.join(", "), "removal failed: {why}");
            Removal::new(c, RemovalResult::Failed, Some(why.into()))
        }
    }
}

/// The cycle's summary line.
fn log_cycle(cycle: &Cycle, started: Instant) {
    let (plan, removals) = (&cycle.plan, &cycle.removals);
    let removed = || {
        removals
            .iter()
            .filter(|r| r.result == RemovalResult::Removed)
    };
    info!(
        removed = removed().count(),
        failed = removals
            .iter()
            .filter(|r| r.result == RemovalResult::Failed)
            .count(),
        deferred = plan.deferred,
        bytes = removed().map(|r| r.candidate.size).sum::<u64>(),
        // Containers without their image, until a cycle puts it back (each said once, as lost).
        images_lost = cycle.images_lost(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "prune cycle finished"
    );
}

//! Carrying out a run against an engine: learn the digests, plan, then pull by digest (mirrors
//! first), tag, and remember first-pull pins. Bounded concurrency, per-attempt timeouts,
//! retries with backoff for failures that may pass, and a stop signal that ends the run early.
//!
//! One image failing never stops the others; every outcome is reported. Nothing changes on
//! error: a failed resolution keeps the present image and the previous pin.

mod carry_out;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures_util::StreamExt;
use tracing::warn;

use crate::decide::budget::held_back;
use crate::decide::cooldown;
use crate::decide::outcome::{Deferral, Outcome};
use crate::decide::pin::{PinMode, Pinned};
use crate::decide::pull_plan::{Action, Decision, Want, plan_pulls};
use crate::io::credentials::CredentialSource;
use crate::io::engine::Engine;
use crate::io::registry::{Registry, Resolved};
use crate::model::failure::{Failure, FailureClass};
use crate::model::image::LocalImage;
use crate::model::platform::choose_platform;
use crate::model::signature::Check;
use crate::model::sync::Locked;
use crate::policy::config::Config;
use crate::policy::state::{Sighting, State};
use crate::policy::window::Window;
use crate::service::clock;
use crate::service::in_flight::{InFlight, InFlightGuard};
use crate::service::progress::{Progress, Step};
use crate::service::shutdown::{Retried, Shutdown};
use crate::service::verify::Verifier;

pub(crate) use carry_out::within;
use carry_out::{Op, RunShared};

/// How a plan asks registries for the digests nothing pins yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    /// It does not: they are unknown (`status --offline`).
    Not,
    /// Once each: a run retries a failure in that image's own turn.
    Once,
    /// With the retry policy's retries (`plan`, `status`, whose registries try once anyway).
    WithRetries,
}

impl Asking {
    /// How `plan` and `status` ask: with the retries (theirs try once), or not at all.
    fn shown(ask_registries: bool) -> Asking {
        if ask_registries {
            Asking::WithRetries
        } else {
            Asking::Not
        }
    }
}

/// Who keeps the state file's first-pull pins of images a run does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinUpkeep {
    /// A one-off command: it leaves every other pin alone (`stowage --config other.toml pull`
    /// must not erase the daemon's pins).
    Command,
    /// The daemon, which owns the state file: once a run is over, pins of images that are no
    /// longer first-pull images of its config are dropped, so a pin kept from an earlier mode
    /// cannot come back later and roll the host back.
    Daemon,
}

/// Everything a run needs besides the images.
pub struct Puller<'a, E> {
    /// The engine to pull through.
    pub engine: &'a E,
    /// Pull settings and registries.
    pub config: &'a Config,
    /// Where registry credentials come from.
    pub credentials: &'a CredentialSource,
    /// Asks registries for tags' digests.
    pub registry: &'a dyn Registry,
    /// First-pull pins and the index cache; saved after a run that changed them.
    pub state: &'a Mutex<State>,
    /// Triggered when stowage stops: no new pull or retry starts after that.
    pub stop: Shutdown,
    /// The pulls under way.
    pub in_flight: InFlight,
    /// Every pinned image of the config (a run may cover only some of them).
    pub all_pinned: &'a [Pinned],
    /// Whether a finished run drops the pins of images that left the config.
    pub pins: PinUpkeep,
    /// The pull window that refreshes of present images wait for (the daemon's runs only: a
    /// pull run by hand is meant to happen now).
    pub(crate) window: Option<&'a Window>,
    /// Told of each step as the run goes.
    pub(crate) progress: &'a dyn Progress,
    /// Signatures verified and not saved yet: saved with the pins once a run settles an
    /// image, never by `plan` or `status`.
    pub(crate) verified: Mutex<BTreeMap<String, String>>,
    /// Digests tags were seen naming, by image, not saved yet (the cooldown of new digests):
    /// saved as `verified` is.
    pub(crate) sighted: Mutex<BTreeMap<String, Sighting>>,
    /// Why the state file could not be saved, once it could not: warned of once, not at every
    /// image a run settles, and a `pull` by hand ends with it.
    pub(crate) save_failed: Mutex<Option<String>>,
}

impl<'a, E> Puller<'a, E> {
    /// This puller, telling `progress` of each step.
    pub(crate) fn followed_by(self, progress: &'a dyn Progress) -> Self {
        Puller { progress, ..self }
    }
}

impl<E: Engine> Puller<'_, E> {
    /// Reads the local store and decides, asking registries only for digests nothing pins yet.
    /// Changes nothing.
    pub async fn plan(
        &self,
        images: &[Pinned],
    ) -> Result<(Vec<Decision>, Vec<LocalImage>), Failure> {
        self.plan_with(images, true).await
    }

    /// [`Self::plan`], optionally without asking any registry: digests nothing pins yet are
    /// then unknown (`status --offline`).
    pub async fn plan_with(
        &self,
        images: &[Pinned],
        ask_registries: bool,
    ) -> Result<(Vec<Decision>, Vec<LocalImage>), Failure> {
        self.plan_listing(images, Asking::shown(ask_registries))
            .await
    }

    /// Lists the local store and plans over it, asking registries as `asking` says.
    async fn plan_listing(
        &self,
        images: &[Pinned],
        asking: Asking,
    ) -> Result<(Vec<Decision>, Vec<LocalImage>), Failure> {
        self.progress.step(Step::Planning);
        let local = self.engine.list_images().await?;
        Ok(self.plan_asking(images, local, asking).await)
    }

    /// [`Self::plan_with`] over a listing of the local images already made.
    pub(crate) async fn plan_over(
        &self,
        images: &[Pinned],
        local: Vec<LocalImage>,
        ask_registries: bool,
    ) -> (Vec<Decision>, Vec<LocalImage>) {
        self.plan_asking(images, local, Asking::shown(ask_registries))
            .await
    }

    /// The plan, asking registries as `asking` says.
    async fn plan_asking(
        &self,
        images: &[Pinned],
        local: Vec<LocalImage>,
        asking: Asking,
    ) -> (Vec<Decision>, Vec<LocalImage>) {
        let (wants, checks): (Vec<Want>, Vec<Option<Check>>) =
            self.wants(images, asking).await.into_iter().unzip();
        let plan = self.decide(images, wants, checks, &local);
        (plan, local)
    }

    /// The decisions for `images`, given the digest each must have and its signature check.
    fn decide(
        &self,
        images: &[Pinned],
        wants: Vec<Want>,
        checks: Vec<Option<Check>>,
        local: &[LocalImage],
    ) -> Vec<Decision> {
        let aliases = self.aliases(images, &wants);
        let mut plan = plan_pulls(images, &wants, &aliases, local, &self.config.registries);
        for (decision, check) in plan.iter_mut().zip(checks) {
            // Checked now (a resolved tag), else what the state file remembers: `status` and
            // `plan` show it without asking the registry.
            decision.signature = check.or_else(|| self.known_check(decision));
        }
        plan
    }

    /// A whole run: plan, carry out, and remember new first-pull pins. Fails only when the
    /// engine cannot list its images; each image's failure is in its outcome.
    ///
    /// Planning asks each registry once: an image whose registry did not answer tries again
    /// in its own turn (see [`Self::execute`]), so one unreachable registry's retries never
    /// hold up the other images' pulls.
    pub async fn converge(&self, images: &[Pinned]) -> Result<Vec<Outcome>, Failure> {
        let (plan, local) = self.plan_listing(images, Asking::Once).await?;
        let outcomes = self.execute(plan, &local).await;
        self.remember(&outcomes, self.pins == PinUpkeep::Daemon)
            .await;
        Ok(outcomes)
    }

    /// The digest each image must have: pinned (config, lock, first pull), or resolved from
    /// the registry as `asking` says (and, with a signature policy, verified before it
    /// counts); otherwise unknown.
    async fn wants(&self, images: &[Pinned], asking: Asking) -> Vec<(Want, Option<Check>)> {
        let known: Vec<Option<String>> = {
            let state = self.state.locked();
            images.iter().map(|p| p.known_digest(&state)).collect()
        };
        let mut wants: Vec<(usize, (Want, Option<Check>))> =
            futures_util::stream::iter(images.iter().zip(known).enumerate())
                .map(
                    |(index, (p, known))| async move { (index, self.want(p, known, asking).await) },
                )
                .buffer_unordered(self.config.pull.concurrency.max(1))
                .collect()
                .await;
        wants.sort_by_key(|(i, _)| *i);
        wants.into_iter().map(|(_, w)| w).collect()
    }

    /// One image's digest: `known` (pinned), else resolved as `asking` says and verified.
    async fn want(
        &self,
        p: &Pinned,
        known: Option<String>,
        asking: Asking,
    ) -> (Want, Option<Check>) {
        if known.is_some() || asking == Asking::Not || p.mode == PinMode::Lock {
            return (self.known_want(p, known), None);
        }
        if asking == Asking::Once {
            let reference = &p.image.reference;
            // As a retry loop would: nothing starts once stopping, and the attempt is a beat
            // of the pull loop's heartbeat (a registry that never answers takes `timeout`).
            if self.stop.is_triggered() {
                return self.resolved(p, Retried::Stopped(None), 0).await;
            }
            self.progress.step(Step::Attempt(reference));
            let once = self.bounded(
                self.registry
                    .resolve(reference, p.image.platform.as_deref()),
            );
            return self.resolved(p, Retried::Done(once.await), 1).await;
        }
        self.ask(p, None).await
    }

    /// One image's digest, asked with the retry policy's retries; `failed`: the attempts
    /// already made (while planning) and the last one's failure, whose retries it takes up.
    /// Then the signature check.
    async fn ask(&self, p: &Pinned, failed: Option<(u32, Failure)>) -> (Want, Option<Check>) {
        let reference = &p.image.reference;
        let platform = p.image.platform.as_deref();
        let (result, attempts) = self
            .with_retries(reference, Op::Resolve, failed, || {
                self.bounded(self.registry.resolve(reference, platform))
            })
            .await;
        self.resolved(p, result, attempts).await
    }

    /// What a resolution came to after `attempts`.
    async fn resolved(
        &self,
        p: &Pinned,
        result: Retried<Result<Resolved, Failure>, Failure>,
        attempts: u32,
    ) -> (Want, Option<Check>) {
        match result {
            Retried::Done(Ok(r)) => self.verified_want(p, r, attempts).await,
            Retried::Done(Err(f)) | Retried::Stopped(Some(f)) => (Want::Unknown(f, attempts), None),
            Retried::Stopped(None) => (
                Want::Unknown(
                    Failure::new(FailureClass::Engine, "stopped before the attempt"),
                    attempts,
                ),
                None,
            ),
        }
    }

    /// A resolved digest, once its signature is checked: it becomes the wanted digest (and a
    /// first-pull pin) only when the policy is met, or only warns.
    async fn verified_want(
        &self,
        p: &Pinned,
        resolved: Resolved,
        attempts: u32,
    ) -> (Want, Option<Check>) {
        let digest = resolved.digest;
        let verifier = self.verifier();
        let checked = self
            .bounded(verifier.verify(&p.image, &digest, resolved.index.as_deref()))
            .await;
        match checked {
            Ok(check) => match check
                .as_ref()
                .and_then(|c| Verifier::refusal(&p.image, &digest, c))
            {
                // Logged once, with what follows from it, as the run settles the image.
                Some(refused) => (Want::Unknown(refused, attempts), check),
                None => (self.cooled_want(p, digest), check),
            },
            // The tag resolved; its signatures could not be read. Not a failed resolution
            // (0 attempts failed): a run does not ask the tag again for it, as before.
            Err(f) => (Want::Unknown(f, 0), None),
        }
    }

    /// `digest`, which the tag names, held back while its cooldown runs (`min_digest_age` of a
    /// `follow` or `first-pull` image). The sighting is known at once to later checks, and
    /// handed to `remember` to save.
    fn cooled_want(&self, p: &Pinned, digest: String) -> Want {
        let Some(min_age) = p.image.min_digest_age.filter(|_| p.mode != PinMode::Lock) else {
            return Want::Digest(digest);
        };
        let now = clock::now().timestamp();
        let key = p.key.to_string();
        let seen = {
            let mut state = self.state.locked();
            let seen = cooldown::sighting(state.sightings.get(&key), &digest, now);
            if state.sightings.get(&key) != Some(&seen) {
                state.sightings.insert(key.clone(), seen.clone());
                self.sighted.locked().insert(key, seen.clone());
            }
            seen
        };
        match cooldown::cooling(&seen, min_age, now) {
            Some(c) => Want::Cooling(c),
            None => Want::Digest(digest),
        }
    }

    /// The signature checks of this puller's images.
    pub(crate) fn verifier(&self) -> Verifier<'_> {
        Verifier {
            registry: self.registry,
            config: self.config,
            state: self.state,
            found: &self.verified,
        }
    }

    /// The digest known without asking a registry, or why there is none.
    fn known_want(&self, p: &Pinned, known: Option<String>) -> Want {
        match known {
            Some(d) => Want::Digest(d),
            // The lock has this image, but nothing for this host's platform: fail this image
            // only, and never resolve a locked tag behind the lock's back.
            None if p.mode == PinMode::Lock => Want::Unknown(
                Failure::new(
                    FailureClass::NotFound,
                    format!(
                        "no matching manifest: the lock entry for {} has no digest for this \
                         host's platform {}; lock an index that has it, or set `platform`",
                        p.key,
                        self.registry.host_platform()
                    ),
                ),
                0,
            ),
            None => Want::Unknown(
                Failure::new(FailureClass::Network, "not asked (offline)"),
                0,
            ),
        }
    }

    /// Other digests under which each image's wanted content may be recorded locally: the
    /// indexes (from the cache) whose entry for this host's platform is the wanted manifest. A
    /// `docker pull` by tag of a multi-platform image records the index digest, not the
    /// manifest's; the content is the same. Only for images that name no platform: a pull by
    /// tag gets the host's platform, which may not be the one asked for.
    fn aliases(&self, images: &[Pinned], wants: &[Want]) -> Vec<Vec<String>> {
        let cache = self.registry.cache_snapshot();
        let host = self.registry.host_platform();
        // Inverted once: matching each image against every cached index was images x indexes
        // platform choices, a third of `plan`'s own time at 1,000 required images.
        let mut indexes_of: HashMap<String, Vec<String>> = HashMap::new();
        for (index, platforms) in cache {
            if let Some(manifest) = choose_platform(&platforms, host) {
                indexes_of.entry(manifest).or_default().push(index);
            }
        }
        images
            .iter()
            .zip(wants)
            .map(|(p, want)| match want {
                Want::Digest(d) if p.image.platform.is_none() => {
                    indexes_of.get(d).cloned().unwrap_or_default()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    /// Carries out `plan` (made over the listing `local`), at most `concurrency` images at
    /// once, and returns an outcome per decision in plan order.
    pub async fn execute(&self, plan: Vec<Decision>, local: &[LocalImage]) -> Vec<Outcome> {
        let shared = RunShared::default();
        self.progress.step(Step::Planned(plan.len()));
        let held = self.held_back(&plan);
        // Every pull and re-tag is in flight from now, queued ones included, until its name
        // points at the content: until then the content may carry no name the pruner would
        // know it by, or only another registry's, and the pruner must leave it alone.
        let guards: Vec<Option<InFlightGuard>> = plan.iter().map(|d| self.guard(d)).collect();
        // Unordered: an ordered buffer keeps finished results in their slots until the first
        // image is done, so one slow pull would hold the whole run to one pull at a time.
        let mut outcomes: Vec<(usize, Outcome)> =
            futures_util::stream::iter(plan.into_iter().zip(guards).zip(held).enumerate())
                .map(|(index, ((decision, guard), held))| {
                    let shared = &shared;
                    async move {
                        let (decision, guard, held) = match self.resolves_again(&decision) {
                            Some((failure, attempts)) => {
                                let decision =
                                    self.decide_again(decision, failure, attempts, local).await;
                                let guard = self.guard(&decision);
                                // Held back by the budgets as the registries state them now.
                                let held = self.held_back(std::slice::from_ref(&decision)).pop();
                                (decision, guard, held.flatten())
                            }
                            None => (decision, guard, held),
                        };
                        if let Some(g) = &guard {
                            g.start();
                        }
                        let outcome = self.carry_out(decision, held, shared).await;
                        self.progress.step(Step::Settled);
                        // Saved as each image settles: a kill later in the run must not lose
                        // this pin, or the next run would resolve the tag again.
                        self.remember(std::slice::from_ref(&outcome), false).await;
                        drop(guard);
                        (index, outcome)
                    }
                })
                .buffer_unordered(self.config.pull.concurrency.max(1))
                .collect()
                .await;
        outcomes.sort_by_key(|(index, _)| *index);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }

    /// A pull or re-tag's entry among the pulls under way; nothing for another action.
    fn guard(&self, d: &Decision) -> Option<InFlightGuard> {
        matches!(d.action, Action::Pull | Action::Tag).then(|| {
            let content = d.digest.iter().chain(&d.holder).cloned().collect();
            self.in_flight.enter(d.reference().to_string(), content)
        })
    }

    /// The failure and attempts of a decision whose registry is worth asking again: planned
    /// on one attempt that failed in a way that may pass, with attempts left.
    fn resolves_again(&self, d: &Decision) -> Option<(Failure, u32)> {
        let failure = d.failure.as_ref()?;
        let attempts = d.resolve_attempts;
        let left = attempts > 0 && attempts < self.config.pull.retry.attempts();
        (left && failure.is_retryable() && !self.stop.is_triggered())
            .then(|| (failure.clone(), attempts))
    }

    /// `d` decided again once its registry has been asked with the retries left, over the
    /// store as it is by then (other images' pulls may have changed it), or as the plan
    /// listed it when the engine cannot list it now.
    async fn decide_again(
        &self,
        d: Decision,
        failure: Failure,
        attempts: u32,
        planned: &[LocalImage],
    ) -> Decision {
        let pinned = std::slice::from_ref(&d.pinned);
        let (want, check) = self.ask(&d.pinned, Some((attempts, failure))).await;
        let now = self.engine.list_images().await;
        if let Err(f) = &now {
            warn!(image = %d.reference(), "cannot list the local images: {f}; deciding over the plan's listing");
        }
        let local = now.as_deref().unwrap_or(planned);
        let mut again = self.decide(pinned, vec![want], vec![check], local);
        again.pop().unwrap_or(d)
    }

    /// The daemon's refreshes that the registries' rate limits would not cover (see
    /// [`held_back`]), from the budgets the plan's own requests were told. A run by hand
    /// holds nothing back.
    fn held_back(&self, plan: &[Decision]) -> Vec<Option<Deferral>> {
        if self.pins != PinUpkeep::Daemon {
            return vec![None; plan.len()];
        }
        held_back(plan, &self.registry.budgets(), |r| {
            self.config.limit_shared_by(r)
        })
    }

    /// Records first-pull pins for images that now have their content, and the index cache,
    /// merged into the state file on disk (see [`State::update`]). With `prune_pins` (the
    /// daemon, once a run is over) it also drops the pins of images that are no longer
    /// first-pull images of its config: a pin kept from an earlier mode must not come back
    /// later and roll the host back.
    async fn remember(&self, outcomes: &[Outcome], prune_pins: bool) {
        let mut new_pins = Vec::new();
        for o in outcomes {
            let p = &o.decision.pinned;
            if p.mode == PinMode::FirstPull
                && o.is_ok()
                && let Some(d) = &o.decision.digest
            {
                new_pins.push((p.key.to_string(), d.clone()));
            }
        }
        let cache = self.registry.cache_snapshot();
        let verified = std::mem::take(&mut *self.verified.locked());
        let sighted = std::mem::take(&mut *self.sighted.locked());
        let prune = prune_pins.then(|| {
            self.all_pinned
                .iter()
                .filter(|p| p.mode == PinMode::FirstPull)
                .map(|p| p.key.clone())
                .collect::<Vec<_>>()
        });
        let unchanged = {
            let state = self.state.locked();
            new_pins
                .iter()
                .all(|(k, _)| state.first_pull.contains_key(k))
                && cache.keys().all(|k| state.index_platforms.contains_key(k))
                && verified.is_empty()
                && sighted.is_empty()
                && prune.is_none()
        };
        if unchanged {
            return;
        }
        let result = State::update(&self.config.state_file, |state| {
            for (k, d) in new_pins {
                state.first_pull.entry(k).or_insert(d);
            }
            state.index_platforms.extend(cache);
            state.verified.extend(verified);
            state.sightings.extend(sighted);
            if let Some(keys) = &prune {
                state.retain_first_pulls(keys);
            }
            if prune_pins {
                state.retain_sightings(self.all_pinned.iter().map(|p| &p.key));
            }
        })
        .await;
        match result {
            Ok(saved) => {
                *self.state.locked() = saved;
                *self.save_failed.locked() = None;
            }
            Err(e) => {
                let e = e.to_string();
                let mut failed = self.save_failed.locked();
                if failed.as_deref() != Some(e.as_str()) {
                    warn!(
                        path = %self.config.state_file.display(),
                        "cannot save the state file ({e}); first-pull pins will be resolved again"
                    );
                }
                *failed = Some(e);
            }
        }
    }

    /// Why the state file could not be saved the last time a save was tried, if it could not.
    pub fn save_failure(&self) -> Option<String> {
        self.save_failed.locked().clone()
    }
}

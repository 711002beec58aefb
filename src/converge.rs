//! Carrying out a run against an engine: learn the digests, plan, then pull by digest (mirrors
//! first), tag, and remember first-pull pins. Bounded concurrency, per-attempt timeouts,
//! retries with backoff for failures that may pass, and a stop signal that ends the run early.
//!
//! One image failing never stops the others; every outcome is reported. Nothing changes on
//! error: a failed resolution keeps the present image and the previous pin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::credentials::{CredentialSource, RegistryAuth};
use crate::engine::{Engine, LocalImage, PullRequest, Pulled};
use crate::failure::{Failure, FailureClass, explain};
use crate::lockfile::LockFile;
use crate::pin::{PinMode, Pinned};
use crate::plan::{Action, Decision, Want, content_names, plan_pulls};
use crate::reference::ImageRef;
use crate::registry::Resolver;
use crate::state::State;

/// How long a credential helper may take to answer.
pub const CREDENTIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How one required image ended up after a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum PullResult {
    /// Nothing to do: the name points at the wanted content.
    Kept,
    /// Pulled by digest, and named.
    Pulled {
        /// The digest pulled.
        digest: Option<String>,
        /// Whether new content arrived (false: the engine had it already).
        updated: bool,
        /// Where it came from: the origin registry or a mirror.
        from: String,
    },
    /// The wanted content was present; only the name was pointed at it.
    Tagged {
        /// The digest the name now points at.
        digest: String,
    },
    /// Every attempt failed, or the failure was not worth retrying.
    Failed {
        /// Which kind of failure.
        class: FailureClass,
        /// What to do about it, with the engine's or registry's words.
        message: String,
    },
    /// Not attempted because stowage was stopping.
    Skipped,
}

/// One image's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The decision that was carried out.
    #[serde(flatten)]
    pub decision: Decision,
    /// How it ended.
    #[serde(flatten)]
    pub result: PullResult,
    /// Registry attempts made for the image: failed resolutions and pulls (0 when none was
    /// needed).
    pub attempts: u32,
    /// Time spent on it, retries included, in milliseconds.
    pub elapsed_ms: u64,
}

impl Outcome {
    /// Whether the image is now in the store as required.
    pub fn is_ok(&self) -> bool {
        matches!(
            self.result,
            PullResult::Kept | PullResult::Pulled { .. } | PullResult::Tagged { .. }
        )
    }
}

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
        // A panic while holding this lock leaves a map of strings, still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, name: String, content: Vec<String>) -> InFlightGuard {
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
struct InFlightGuard {
    set: InFlight,
    name: String,
}

impl InFlightGuard {
    /// Its work starts (it leaves the queue).
    fn start(&self) {
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

/// Everything a run needs besides the images.
pub struct Puller<'a, E> {
    /// The engine to pull through.
    pub engine: &'a E,
    /// Pull settings and registries.
    pub config: &'a Config,
    /// Where registry credentials come from.
    pub credentials: &'a CredentialSource,
    /// Asks registries for tags' digests.
    pub resolver: &'a Resolver,
    /// First-pull pins and the index cache; saved after a run that changed them.
    pub state: &'a Mutex<State>,
    /// Cancelled when stowage stops: no new pull or retry starts after that.
    pub stop: CancellationToken,
    /// The pulls under way.
    pub in_flight: InFlight,
    /// Every pinned image of the config (a run may cover only some of them).
    pub all_pinned: &'a [Pinned],
    /// Whether saving the state drops pins of images that left the config (the daemon only:
    /// a one-off `stowage --config other.toml pull` must not erase the daemon's pins).
    pub prune_pins: bool,
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
        let local = self.engine.list_images().await?;
        let wants = self.wants(images, ask_registries).await;
        let aliases = self.aliases(images, &wants);
        let plan = plan_pulls(images, &wants, &aliases, &local, &self.config.registries);
        Ok((plan, local))
    }

    /// A whole run: plan, carry out, and remember new first-pull pins. Fails only when the
    /// engine cannot list its images; each image's failure is in its outcome.
    pub async fn converge(&self, images: &[Pinned]) -> Result<Vec<Outcome>, Failure> {
        let (plan, _) = self.plan(images).await?;
        let outcomes = self.execute(plan).await;
        self.remember(&outcomes, self.prune_pins);
        Ok(outcomes)
    }

    /// The digest each image must have: pinned (config, lock, first pull), or resolved from
    /// the registry when `ask_registries`; otherwise unknown.
    async fn wants(&self, images: &[Pinned], ask_registries: bool) -> Vec<Want> {
        let known: Vec<Option<String>> = {
            let state = self.lock_state();
            images.iter().map(|p| p.known_digest(&state)).collect()
        };
        let mut wants: Vec<(usize, Want)> =
            futures_util::stream::iter(images.iter().zip(known).enumerate())
                .map(|(index, (p, known))| async move {
                    let want = match known {
                        Some(d) => Want::Digest(d),
                        // The lock has this image, but nothing for this host's platform: fail
                        // this image only, and never resolve a locked tag behind the lock's back.
                        None if p.mode == PinMode::Lock => Want::Unknown(
                            Failure::new(
                                FailureClass::NotFound,
                                format!(
                                    "no matching manifest: the lock entry for {} has no digest \
                                     for this host's platform {}; lock an index that has it, or \
                                     set `platform`",
                                    p.key,
                                    self.resolver.host_platform()
                                ),
                            ),
                            0,
                        ),
                        None if !ask_registries => Want::Unknown(
                            Failure::new(FailureClass::Network, "not asked (offline)"),
                            0,
                        ),
                        None => {
                            let reference = &p.image.reference;
                            let platform = p.image.platform.as_deref();
                            let (result, attempts) = self
                                .with_retries(reference, "resolve", || {
                                    self.resolver.resolve(reference, platform)
                                })
                                .await;
                            match result {
                                Ok(r) => Want::Digest(r.digest),
                                Err(f) => Want::Unknown(f, attempts),
                            }
                        }
                    };
                    (index, want)
                })
                .buffer_unordered(self.config.pull.concurrency.max(1))
                .collect()
                .await;
        wants.sort_by_key(|(i, _)| *i);
        wants.into_iter().map(|(_, w)| w).collect()
    }

    /// Other digests under which each image's wanted content may be recorded locally: the
    /// indexes (from the cache) whose entry for this host's platform is the wanted manifest. A
    /// `docker pull` by tag of a multi-platform image records the index digest, not the
    /// manifest's; the content is the same. Only for images that name no platform: a pull by
    /// tag gets the host's platform, which may not be the one asked for.
    fn aliases(&self, images: &[Pinned], wants: &[Want]) -> Vec<Vec<String>> {
        let cache = self.resolver.cache_snapshot();
        let host = self.resolver.host_platform();
        images
            .iter()
            .zip(wants)
            .map(|(p, want)| match want {
                Want::Digest(d) if p.image.platform.is_none() => cache
                    .iter()
                    .filter(|(_, platforms)| {
                        crate::registry::choose_platform(platforms, host).as_deref()
                            == Some(d.as_str())
                    })
                    .map(|(index, _)| index.clone())
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Carries out `plan`, at most `concurrency` images at once, and returns an outcome per
    /// decision in plan order.
    pub async fn execute(&self, plan: Vec<Decision>) -> Vec<Outcome> {
        let auth_cache = AuthCache::default();
        // Every pull and re-tag is in flight from now, queued ones included, until its name
        // points at the content: until then the content may carry no name the pruner would
        // know it by, or only another registry's, and the pruner must leave it alone.
        let guards: Vec<Option<InFlightGuard>> = plan
            .iter()
            .map(|d| {
                matches!(d.action, Action::Pull | Action::Tag).then(|| {
                    let content = d.digest.iter().chain(&d.holder).cloned().collect();
                    self.in_flight.enter(d.reference().to_string(), content)
                })
            })
            .collect();
        // Unordered: an ordered buffer keeps finished results in their slots until the first
        // image is done, so one slow pull would hold the whole run to one pull at a time.
        let mut outcomes: Vec<(usize, Outcome)> =
            futures_util::stream::iter(plan.into_iter().zip(guards).enumerate())
                .map(|(index, (decision, guard))| {
                    let auth_cache = &auth_cache;
                    async move {
                        if let Some(g) = &guard {
                            g.start();
                        }
                        let outcome = self.carry_out(decision, auth_cache).await;
                        // Saved as each image settles: a kill later in the run must not lose
                        // this pin, or the next run would resolve the tag again.
                        self.remember(std::slice::from_ref(&outcome), false);
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

    async fn carry_out(&self, decision: Decision, auth_cache: &AuthCache) -> Outcome {
        let started = Instant::now();
        let finish = |decision: Decision, result: PullResult, attempts: u32| Outcome {
            decision,
            result,
            attempts,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let reference = decision.reference().clone();
        match decision.action {
            Action::Keep => {
                if let Some(f) = &decision.failure {
                    warn!(image = %reference, class = f.class.as_str(), "{}", decision.reason);
                }
                return finish(decision, PullResult::Kept, 0);
            }
            Action::Fail => {
                let failure = decision.failure.clone().unwrap_or_else(|| {
                    Failure::new(FailureClass::Engine, "no digest and nothing present")
                });
                warn!(image = %reference, class = failure.class.as_str(), "{}", decision.reason);
                let result = PullResult::Failed {
                    class: failure.class,
                    message: decision.reason.clone(),
                };
                let attempts = decision.resolve_attempts;
                return finish(decision, result, attempts);
            }
            Action::Tag | Action::Pull => {}
        }
        if self.stop.is_cancelled() {
            return finish(decision, PullResult::Skipped, 0);
        }
        let digest = decision.digest.clone().unwrap_or_default();
        if decision.action == Action::Tag {
            let source = decision.holder.clone().unwrap_or_default();
            return match self.name(&reference, &source).await {
                Ok(()) => {
                    info!(image = %reference, digest, "tagged the pinned content");
                    finish(decision, PullResult::Tagged { digest }, 0)
                }
                Err(f) => {
                    let message = explain(&reference, &f);
                    warn!(image = %reference, class = f.class.as_str(), "tagging failed: {message}");
                    finish(
                        decision,
                        PullResult::Failed {
                            class: f.class,
                            message,
                        },
                        0,
                    )
                }
            };
        }
        let (result, attempts) = self
            .with_retries(&reference, "pull", || {
                self.pull_by_digest(&decision, &digest, auth_cache)
            })
            .await;
        match result {
            Ok((pulled, from)) => {
                info!(
                    image = %reference,
                    digest,
                    from,
                    updated = pulled.updated,
                    attempts,
                    "pulled"
                );
                let result = PullResult::Pulled {
                    digest: Some(digest),
                    updated: pulled.updated,
                    from,
                };
                finish(decision, result, attempts)
            }
            Err(failure) if failure.class == FailureClass::Engine && failure.detail == STOPPED => {
                finish(decision, PullResult::Skipped, attempts)
            }
            Err(failure) => {
                let message = explain(&reference, &failure);
                finish(
                    decision,
                    PullResult::Failed {
                        class: failure.class,
                        message,
                    },
                    attempts,
                )
            }
        }
    }

    /// One attempt: pull `digest` from each mirror, then from the origin, until one serves
    /// it; then point the configured name at it.
    async fn pull_by_digest(
        &self,
        decision: &Decision,
        digest: &str,
        auth_cache: &AuthCache,
    ) -> Result<(Pulled, String), Failure> {
        let reference = decision.reference();
        let mut names = content_names(reference, &self.config.registries);
        // Mirrors first: content-addressed, so whatever they serve is what was pinned.
        names.rotate_left(1);
        let mut last = None;
        for name in names {
            let source: ImageRef = format!("{name}@{digest}")
                .parse()
                .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
            let request = PullRequest {
                platform: decision.pinned.image.platform.clone(),
                auth: self.auth_for(source.registry(), auth_cache).await,
                reference: source.clone(),
            };
            let pulled =
                match tokio::time::timeout(self.config.pull.timeout, self.engine.pull(&request))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(Failure::new(
                        FailureClass::Network,
                        format!(
                            "stowage gave up: no result within pull.timeout ({})",
                            humantime::format_duration(self.config.pull.timeout)
                        ),
                    )),
                };
            match pulled {
                Ok(pulled) => {
                    self.name(reference, &source.to_string()).await?;
                    return Ok((pulled, source.registry().to_owned()));
                }
                Err(f) => {
                    if source.registry() != reference.registry() {
                        warn!(
                            image = %reference,
                            mirror = source.registry(),
                            "mirror failed, trying the next source: {}",
                            explain(&source, &f)
                        );
                    }
                    last = Some(f);
                }
            }
        }
        Err(last.unwrap_or_else(|| Failure::new(FailureClass::Engine, "no source to pull from")))
    }

    /// Points the reference's tag at `source` (a local image ID or `name@digest`). A digest
    /// pull leaves the image untagged, which `docker image prune` would take as dangling.
    async fn name(&self, reference: &ImageRef, source: &str) -> Result<(), Failure> {
        match reference.tag() {
            Some(tag) => self.engine.tag(source, &reference.name(), tag).await,
            None => Ok(()),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts run out; sleeps with
    /// backoff between attempts, and gives up at once when stopping. Returns the attempts made.
    async fn with_retries<T, F, Fut>(
        &self,
        image: &ImageRef,
        what: &str,
        mut op: F,
    ) -> (Result<T, Failure>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = self.config.pull.retry;
        let mut attempt = 0;
        loop {
            if self.stop.is_cancelled() {
                return (Err(Failure::new(FailureClass::Engine, STOPPED)), attempt);
            }
            attempt += 1;
            if what == "pull" {
                info!(image = %image, attempt, "pulling");
            }
            let failure = match op().await {
                Ok(v) => return (Ok(v), attempt),
                Err(f) => f,
            };
            let message = explain(image, &failure);
            if !failure.is_retryable() || attempt >= policy.attempts() {
                warn!(image = %image, class = failure.class.as_str(), attempts = attempt, "{what} failed: {message}");
                return (Err(failure), attempt);
            }
            let delay = policy.delay(attempt, rand::random::<f64>());
            warn!(
                image = %image,
                class = failure.class.as_str(),
                attempt,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "{what} failed, will retry: {message}"
            );
            tokio::select! {
                // Stop first: with a zero delay both are ready, and a stop must win.
                biased;
                () = self.stop.cancelled() => {
                    warn!(image = %image, class = failure.class.as_str(), attempts = attempt, "{what} failed: {message}");
                    return (Err(failure), attempt);
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Records first-pull pins for images that now have their content, and the index cache,
    /// merged into the state file on disk (see [`State::update`]). With `prune_pins` (the
    /// daemon, once a run is over) it also drops the pins of images that are no longer
    /// first-pull images of its config: a pin kept from an earlier mode must not come back
    /// later and roll the host back.
    fn remember(&self, outcomes: &[Outcome], prune_pins: bool) {
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
        let cache = self.resolver.cache_snapshot();
        let prune = prune_pins.then(|| {
            self.all_pinned
                .iter()
                .filter(|p| p.mode == PinMode::FirstPull)
                .map(|p| p.key.clone())
                .collect::<Vec<_>>()
        });
        let unchanged = {
            let state = self.lock_state();
            new_pins
                .iter()
                .all(|(k, _)| state.first_pull.contains_key(k))
                && cache.keys().all(|k| state.index_platforms.contains_key(k))
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
            if let Some(keys) = &prune {
                state.retain_first_pulls(keys);
            }
        });
        match result {
            Ok(saved) => *self.lock_state() = saved,
            Err(e) => warn!(
                path = %self.config.state_file.display(),
                "cannot save the state file ({e}); first-pull pins will be resolved again"
            ),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Credentials for `registry`, looked up once per run and registry (a credential helper is
    /// a process, and concurrent pulls from one registry must not each start one). A helper
    /// that does not answer within [`CREDENTIAL_TIMEOUT`] is given up on: the pull goes on
    /// anonymously and the registry's answer says whether that was enough.
    async fn auth_for(&self, registry: &str, cache: &AuthCache) -> Option<RegistryAuth> {
        let cell = cache
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(registry.to_owned())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let source = self.credentials.clone();
            let owned = registry.to_owned();
            let lookup = tokio::task::spawn_blocking(move || source.lookup(&owned));
            match tokio::time::timeout(CREDENTIAL_TIMEOUT, lookup).await {
                Ok(Ok(Ok(found))) => found,
                Ok(Ok(Err(e))) => {
                    warn!("{e}; pulling anonymously");
                    None
                }
                Ok(Err(e)) => {
                    warn!(
                        registry,
                        "credential lookup did not complete: {e}; pulling anonymously"
                    );
                    None
                }
                Err(_) => {
                    warn!(
                        registry,
                        "the credential helper did not answer within {}s; pulling anonymously",
                        CREDENTIAL_TIMEOUT.as_secs()
                    );
                    None
                }
            }
        })
        .await
        .clone()
    }
}

/// What the runs of one process share: the configuration and its pins, credentials, the
/// resolver and the state file's content.
pub struct Session {
    /// The configuration.
    pub config: Config,
    /// Every required image with its pin mode, in config order.
    pub pinned: Vec<Pinned>,
    /// Where registry credentials come from.
    pub credentials: CredentialSource,
    /// Asks registries for digests.
    pub resolver: Resolver,
    /// First-pull pins and the index cache.
    pub state: Mutex<State>,
}

impl Session {
    /// Reads the state file again: what another session saved since this one was set up (the
    /// first-pull pins of a config being replaced, saved while it drained).
    pub fn reread_state(&self) {
        let fresh = State::load(&self.config.state_file);
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    /// Sets up a session: reads the state file, and asks the engine its platform (what tags
    /// resolve to when the config names none).
    pub async fn new<E: Engine>(
        config: Config,
        lock: Option<LockFile>,
        engine: &E,
    ) -> Result<Session, SessionError> {
        let platform = engine.platform().await.map_err(SessionError::Engine)?;
        // Lock entries of multi-platform indexes pin this host's platform's digest.
        let pinned = crate::pin::pin_images(&config, lock.as_ref(), Some(&platform))
            .map_err(SessionError::Config)?;
        let credentials = CredentialSource::new(config.pull.credentials.as_deref());
        let state = State::load(&config.state_file);
        let cache = Arc::new(Mutex::new(state.index_platforms.clone()));
        let resolver = Resolver::new(&config, credentials.clone(), platform, cache);
        // A lock entry of an index is exactly what the cache holds: no need to fetch it again.
        if let Some(lock) = &lock {
            resolver.learn(
                lock.entries
                    .values()
                    .map(|e| (e.digest.clone(), e.platforms.clone())),
            );
        }
        Ok(Session {
            config,
            pinned,
            credentials,
            resolver,
            state: Mutex::new(state),
        })
    }

    /// A puller over this session.
    pub fn puller<'a, E>(
        &'a self,
        engine: &'a E,
        stop: CancellationToken,
        in_flight: InFlight,
    ) -> Puller<'a, E> {
        Puller {
            engine,
            config: &self.config,
            credentials: &self.credentials,
            resolver: &self.resolver,
            state: &self.state,
            stop,
            in_flight,
            all_pinned: &self.pinned,
            prune_pins: false,
        }
    }

    /// A pruner over this session, with `settings`, sharing `in_flight` with the pulls (so it
    /// never removes an image being pulled) and stopping with `stop`.
    pub fn pruner<'a, S>(
        &'a self,
        store: &'a S,
        settings: &'a crate::config::PruneSettings,
        in_flight: InFlight,
        stop: CancellationToken,
    ) -> crate::pruner::Pruner<'a, S> {
        crate::pruner::Pruner {
            store,
            config: &self.config,
            settings,
            pinned: &self.pinned,
            state: &self.state,
            in_flight,
            stop,
            registry: &self.resolver,
            registry_copies: Mutex::default(),
            credentials: &self.credentials,
        }
    }

    /// The pinned images refreshed on `schedule` (`None`: `pull.schedule`).
    pub fn pinned_on(&self, schedule: Option<&str>) -> Vec<Pinned> {
        self.pinned
            .iter()
            .filter(|p| {
                p.image
                    .schedule
                    .as_ref()
                    .map(crate::schedule::Schedule::expr)
                    == schedule
            })
            .cloned()
            .collect()
    }
}

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The engine did not say its platform: worth retrying.
    #[error("engine: {}", .0.detail)]
    Engine(Failure),
    /// The lock cannot serve this host (an index without its platform): a configuration error.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<crate::config::Problem>),
}

/// The detail of the failure that stands for "not attempted: stopping".
const STOPPED: &str = "stopped before the attempt";

/// One credential lookup per registry and run.
#[derive(Default)]
struct AuthCache(Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<RegistryAuth>>>>>);

/// Counts of a run's outcomes, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Images pulled with new content.
    pub pulled: usize,
    /// Images pulled whose content the engine already had.
    pub up_to_date: usize,
    /// Images whose name was pointed back at the pinned content.
    pub tagged: usize,
    /// Images present with nothing to do.
    pub kept: usize,
    /// Images that failed.
    pub failed: usize,
    /// Images not attempted because of shutdown.
    pub skipped: usize,
}

impl Summary {
    /// Tallies `outcomes`.
    pub fn of(outcomes: &[Outcome]) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            match &o.result {
                PullResult::Kept => s.kept += 1,
                PullResult::Pulled { updated: true, .. } => s.pulled += 1,
                PullResult::Pulled { updated: false, .. } => s.up_to_date += 1,
                PullResult::Tagged { .. } => s.tagged += 1,
                PullResult::Failed { .. } => s.failed += 1,
                PullResult::Skipped => s.skipped += 1,
            }
        }
        s
    }

    /// Whether every image is present as required.
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.skipped == 0
    }
}

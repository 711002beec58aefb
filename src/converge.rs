//! Carrying out a pull plan against an engine: bounded concurrency, per-attempt timeouts,
//! retries with backoff for failures that may pass, and a stop signal that ends the run early.
//!
//! One image failing never stops the others; every outcome is reported.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{PullSettings, RequiredImage};
use crate::credentials::{CredentialSource, RegistryAuth};
use crate::engine::{Engine, PullRequest, Pulled};
use crate::failure::{Failure, FailureClass, explain};
use crate::plan::{Action, Decision, plan_pulls};

/// How one required image ended up after a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum PullResult {
    /// Nothing to do: present, and its policy does not refresh it.
    Kept,
    /// Pulled (or refreshed) successfully.
    Pulled {
        /// The manifest digest the registry served, when known.
        digest: Option<String>,
        /// Whether new content arrived.
        updated: bool,
    },
    /// Every attempt failed, or the failure was not worth retrying.
    Failed {
        /// Which kind of failure.
        class: FailureClass,
        /// What to do about it, with the engine's words.
        message: String,
    },
    /// Not attempted because the daemon was stopping.
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
    /// Pull attempts made (0 when none was needed).
    pub attempts: u32,
    /// Time spent on it, retries included, in milliseconds.
    pub elapsed_ms: u64,
}

impl Outcome {
    /// Whether the image is now in the store as required.
    pub fn is_ok(&self) -> bool {
        matches!(self.result, PullResult::Kept | PullResult::Pulled { .. })
    }
}

/// The images currently being pulled, shared so a shutdown can say which it abandoned (and so
/// a later pruner can stay away from them).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<BTreeSet<String>>>);

impl InFlight {
    /// The fully qualified names of the pulls under way.
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A panic while holding this lock leaves a set of strings, still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, name: String) -> InFlightGuard {
        self.lock().insert(name.clone());
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

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.name);
    }
}

/// Everything a run needs besides the images.
pub struct Puller<'a, E> {
    /// The engine to pull through.
    pub engine: &'a E,
    /// Concurrency, timeouts and retries.
    pub settings: &'a PullSettings,
    /// Where registry credentials come from.
    pub credentials: &'a CredentialSource,
    /// Cancelled when the daemon stops: no new pull or retry starts after that.
    pub stop: CancellationToken,
    /// The pulls under way.
    pub in_flight: InFlight,
}

impl<E: Engine> Puller<'_, E> {
    /// Reads the local store, plans, and pulls what the plan says. Fails only when the engine
    /// cannot list its images; individual pull failures are in the outcomes.
    pub async fn converge(&self, images: &[RequiredImage]) -> Result<Vec<Outcome>, Failure> {
        let local = self.engine.list_images().await?;
        let plan = plan_pulls(images, &local);
        Ok(self.execute(plan).await)
    }

    /// Carries out `plan`, at most `concurrency` pulls at once, and returns an outcome per
    /// decision in plan order.
    pub async fn execute(&self, plan: Vec<Decision>) -> Vec<Outcome> {
        let auth_cache = AuthCache::default();
        // Unordered: an ordered buffer keeps finished results in their slots until the first
        // image is done, so one slow pull would hold the whole run to one pull at a time.
        let mut outcomes: Vec<(usize, Outcome)> =
            futures_util::stream::iter(plan.into_iter().enumerate())
                .map(|(index, decision)| {
                    let auth_cache = &auth_cache;
                    async move { (index, self.carry_out(decision, auth_cache).await) }
                })
                .buffer_unordered(self.settings.concurrency.max(1))
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
        if decision.action == Action::Keep {
            return finish(decision, PullResult::Kept, 0);
        }
        if self.stop.is_cancelled() {
            return finish(decision, PullResult::Skipped, 0);
        }
        let reference = decision.image.reference.clone();
        let request = PullRequest {
            reference: reference.clone(),
            platform: decision.image.platform.clone(),
            auth: self.auth_for(reference.registry(), auth_cache).await,
        };
        let policy = self.settings.retry;
        let mut attempt = 0;
        loop {
            if self.stop.is_cancelled() {
                return finish(decision, PullResult::Skipped, attempt);
            }
            attempt += 1;
            info!(image = %reference, action = decision.action.as_str(), attempt, "pulling");
            let result = {
                let _guard = self.in_flight.enter(reference.to_string());
                match tokio::time::timeout(self.settings.timeout, self.engine.pull(&request)).await
                {
                    Ok(result) => result,
                    Err(_) => Err(Failure::new(
                        FailureClass::Network,
                        format!(
                            "stowage gave up: no result within pull.timeout ({})",
                            humantime::format_duration(self.settings.timeout)
                        ),
                    )),
                }
            };
            let failure = match result {
                Ok(Pulled { digest, updated }) => {
                    info!(
                        image = %reference,
                        digest = digest.as_deref().unwrap_or("unknown"),
                        updated,
                        attempts = attempt,
                        "pulled"
                    );
                    return finish(decision, PullResult::Pulled { digest, updated }, attempt);
                }
                Err(failure) => failure,
            };
            let message = explain(&reference, &failure);
            if !failure.is_retryable() || attempt >= policy.attempts() {
                warn!(
                    image = %reference,
                    class = failure.class.as_str(),
                    attempts = attempt,
                    "pull failed: {message}"
                );
                let result = PullResult::Failed {
                    class: failure.class,
                    message,
                };
                return finish(decision, result, attempt);
            }
            let delay = policy.delay(attempt, rand::random::<f64>());
            warn!(
                image = %reference,
                class = failure.class.as_str(),
                attempt,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "pull failed, will retry: {message}"
            );
            tokio::select! {
                // Stop first: with a zero delay both are ready, and a stop must win.
                biased;
                () = self.stop.cancelled() => {
                    let result = PullResult::Failed { class: failure.class, message };
                    return finish(decision, result, attempt);
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
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

/// How long a credential helper may take to answer.
pub const CREDENTIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One credential lookup per registry and run.
#[derive(Default)]
struct AuthCache(Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<RegistryAuth>>>>>);

/// Counts of a run's outcomes, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Images pulled or refreshed with new content.
    pub pulled: usize,
    /// Images refreshed that were already up to date.
    pub up_to_date: usize,
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

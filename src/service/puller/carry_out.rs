//! Carrying out one decision of a run: keep, fail, re-tag, or pull by digest (mirrors first)
//! with retries, each attempt bounded by `pull.timeout`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::Puller;
use crate::decide::outcome::{Deferral, Outcome, PullResult};
use crate::decide::pull_plan::{Action, Decision, Presence, explain_pull, mirrors_first};
use crate::io::credentials::RegistryAuth;
use crate::io::engine::{Engine, PullRequest, Pulled, unfollowed_bytes};
use crate::model::failure::{Failure, FailureClass, explain};
use crate::model::reference::ImageRef;
use crate::model::signature::Check;
use crate::model::signature::Signer;
use crate::model::sync::Locked;
use crate::service::clock;
use crate::service::progress::Step;
use crate::service::shutdown::{Attempt, Retried};
use crate::service::verify::Verifier;

impl<E: Engine> Puller<'_, E> {
    /// Carries out one decision.
    /// `held`: why its refresh waits for the registry's budget, when it does.
    pub(super) async fn carry_out(
        &self,
        decision: Decision,
        held: Option<Deferral>,
        shared: &RunShared,
    ) -> Outcome {
        let started = Instant::now();
        let mut decision = decision;
        let (result, attempts) = match decision.action {
            Action::Keep => Self::keep(&decision),
            Action::Fail => Self::fail(&decision),
            Action::Tag | Action::Pull if self.stop.is_triggered() => (PullResult::Skipped, 0),
            Action::Tag | Action::Pull
                if let Some(why) = self.outside_window(&decision).or_else(|| held.clone()) =>
            {
                info!(image = %decision.reference(), "{why}: the refresh waits");
                (PullResult::Deferred { why }, 0)
            }
            Action::Tag | Action::Pull => {
                let digest = decision.digest.clone().unwrap_or_default();
                let _one_at_a_time = shared.hold(&digest).await;
                match self.signed(&mut decision).await {
                    Err(refused) => refused,
                    Ok(()) if decision.action == Action::Tag => self.retag(&decision).await,
                    Ok(()) => self.pull(&decision, &shared.auths).await,
                }
            }
        };
        Outcome {
            decision,
            result,
            attempts,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// When a present image's refresh must wait for the pull window, which is closed now.
    /// Checked as each image's turn comes, so a window that closes mid-run lets the images
    /// under way finish and starts no other. A missing image never waits.
    fn outside_window(&self, decision: &Decision) -> Option<Deferral> {
        let window = self.window?;
        if decision.state == Presence::Missing {
            return None;
        }
        let now = clock::now().with_timezone(&chrono::Utc);
        if window.open_at(now).is_some() {
            return None;
        }
        let opens = window.current_or_next(now).map(|o| o.opens.to_rfc3339());
        Some(Deferral::Window { opens })
    }

    /// Checks the signature of the digest about to be pulled or named, unless this run did
    /// already; `Err` is the result of an image it refuses (or whose registry could not say).
    async fn signed(&self, decision: &mut Decision) -> Result<(), (PullResult, u32)> {
        if matches!(
            decision.signature,
            Some(Check::Verified { .. } | Check::Warned { .. })
        ) {
            return Ok(());
        }
        let image = &decision.pinned.image;
        let digest = decision.digest.clone().unwrap_or_default();
        let subject = decision.pinned.subject.as_deref();
        let checked = self
            .bounded(self.verifier().verify(image, &digest, subject))
            .await;
        let failure = match checked {
            Ok(check) => {
                let refused = check
                    .as_ref()
                    .and_then(|c| Verifier::refusal(image, &digest, c));
                decision.signature = check;
                match refused {
                    None => return Ok(()),
                    Some(f) => f,
                }
            }
            Err(f) => f,
        };
        let reference = decision.reference();
        let mut message = explain(reference, &failure);
        if failure.class == FailureClass::Signature {
            message.push_str("; it is not pulled");
        }
        warn!(image = %reference, class = failure.class.as_str(), "{message}");
        Err((
            PullResult::Failed {
                class: failure.class,
                message,
                detail: failure.detail,
            },
            1,
        ))
    }

    /// A verification the state file remembers for a present image's digest: reported, and
    /// exported, without asking the registry.
    pub(super) fn known_check(&self, decision: &Decision) -> Option<Check> {
        let policy = decision.pinned.image.verify.as_ref()?;
        let state = self.state.locked();
        let signer = [
            decision.digest.as_deref(),
            decision.pinned.subject.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|d| state.verified.get(d))
        .find(|k| policy.trusts(k))?;
        Some(Check::Verified {
            signer: Signer::parse(signer)?,
            cached: true,
        })
    }

    /// Nothing to do; a failure to learn a newer digest is only worth a warning.
    fn keep(decision: &Decision) -> (PullResult, u32) {
        if let Some(f) = &decision.failure {
            let attempts = decision.resolve_attempts;
            warn!(image = %decision.reference(), class = f.class.as_str(), attempts, "{}", decision.reason);
        }
        (PullResult::Kept, 0)
    }

    /// No digest, and nothing present to fall back on.
    fn fail(decision: &Decision) -> (PullResult, u32) {
        let class = decision
            .failure
            .as_ref()
            .map_or(FailureClass::Engine, |f| f.class);
        let attempts = decision.resolve_attempts;
        // Worded as a pull's last failure is (`pull failed: …`), and as the retries before it
        // were (`resolve failed, will retry: …`): one failure, one way of saying it.
        // A refused signature is no failed resolution: the tag resolved.
        if attempts > 0 && class != FailureClass::Signature {
            warn!(image = %decision.reference(), class = class.as_str(), attempts, "resolve failed: {}", decision.reason);
        } else {
            warn!(image = %decision.reference(), class = class.as_str(), attempts, "{}", decision.reason);
        }
        let result = PullResult::Failed {
            class,
            message: decision.reason.clone(),
            detail: decision
                .failure
                .as_ref()
                .map(|f| f.detail.clone())
                .unwrap_or_default(),
        };
        (result, decision.resolve_attempts)
    }

    /// The pinned content is present under another name: point the configured name at it.
    async fn retag(&self, decision: &Decision) -> (PullResult, u32) {
        let reference = decision.reference();
        let digest = decision.digest.clone().unwrap_or_default();
        let source = decision.holder.clone().unwrap_or_default();
        match self.name(reference, &source).await {
            Ok(()) => {
                info!(image = %reference, digest, "tagged the pinned content");
                (PullResult::Tagged { digest }, 0)
            }
            Err(f) => {
                let message = explain(reference, &f);
                warn!(image = %reference, class = f.class.as_str(), "tagging failed: {message}");
                let result = PullResult::Failed {
                    class: f.class,
                    message,
                    detail: f.detail,
                };
                (result, 0)
            }
        }
    }

    /// Pulls the pinned digest, with retries.
    async fn pull(&self, decision: &Decision, auth_cache: &AuthCache) -> (PullResult, u32) {
        let reference = decision.reference();
        let digest = decision.digest.clone().unwrap_or_default();
        let (result, attempts) = self
            .with_retries(reference, Op::Pull, None, || {
                self.pull_by_digest(decision, &digest, auth_cache)
            })
            .await;
        let result = match result {
            Retried::Done(Ok((pulled, from))) => {
                info!(
                    image = %reference,
                    digest,
                    from,
                    updated = pulled.updated,
                    attempts,
                    "pulled"
                );
                PullResult::Pulled {
                    digest: Some(digest),
                    updated: pulled.updated,
                    from,
                }
            }
            Retried::Stopped(None) => PullResult::Skipped,
            Retried::Done(Err(failure)) | Retried::Stopped(Some(failure)) => {
                let message = explain_pull(decision, &failure);
                warn!(image = %reference, class = failure.class.as_str(), attempts, "pull failed: {message}");
                PullResult::Failed {
                    class: failure.class,
                    message,
                    detail: failure.detail,
                }
            }
        };
        (result, attempts)
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
        let mut last = None;
        for name in mirrors_first(reference, &self.config.registries) {
            let source: ImageRef = format!("{name}@{digest}")
                .parse()
                .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
            // A registry that answered 429 is left alone until its Retry-After, by the
            // engine's pulls too: the next source, or this failure.
            if let Some(f) = self.registry.refusal(source.registry()) {
                last = Some(f);
                continue;
            }
            let request = PullRequest {
                platform: decision.pinned.image.platform.clone(),
                auth: self.auth_for(source.registry(), auth_cache).await,
                reference: source.clone(),
            };
            let bytes = |done, all| self.progress.step(Step::Bytes(reference, done, all));
            let pulled = self.bounded(self.engine.pull(&request, &bytes)).await;
            // The registry, or the mirror with its path: where the content came from.
            let from = name
                .strip_suffix(reference.repository())
                .and_then(|n| n.strip_suffix('/'))
                .unwrap_or(source.registry())
                .to_owned();
            match pulled {
                Ok(pulled) => {
                    self.name(reference, &source.to_string()).await?;
                    if source.registry() != reference.registry() {
                        self.name_origin_digest(reference, &request, auth_cache)
                            .await;
                    }
                    return Ok((pulled, from));
                }
                Err(f) => {
                    let sent = request.auth.is_some();
                    let f = f.read_credentials_from(|| self.credentials.describe(sent));
                    if f.class == FailureClass::RateLimited {
                        self.registry.rate_limited(source.registry());
                    }
                    if source.registry() != reference.registry() {
                        warn!(
                            image = %reference,
                            mirror = %from,
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

    /// After a pull through a mirror: the digest reference under the origin's name, so that
    /// `docker run origin/repo@sha256:...` (a compose file's pin) finds the content here
    /// rather than pulling from the origin. Only where the engine needs a pull for that
    /// ([`Engine::names_digests_by_pull`]): the content is present, so the origin is asked one
    /// manifest HEAD (Docker 20.10 pings `/v2/` first), which Docker Hub does not count as a
    /// pull. Best effort: the image is in place either way, and an origin that cannot be
    /// reached (the reason for many mirrors) is said once per pull, not retried.
    async fn name_origin_digest(
        &self,
        reference: &ImageRef,
        mirrored: &PullRequest,
        auth_cache: &AuthCache,
    ) {
        let Some(digest) = mirrored.reference.digest() else {
            return;
        };
        if !self.engine.names_digests_by_pull() {
            return;
        }
        let Ok(origin) = format!("{}@{digest}", reference.name()).parse::<ImageRef>() else {
            return;
        };
        if self.registry.refusal(origin.registry()).is_some() {
            return;
        }
        let request = PullRequest {
            platform: mirrored.platform.clone(),
            auth: self.auth_for(origin.registry(), auth_cache).await,
            reference: origin.clone(),
        };
        let named = self.engine.pull(&request, &unfollowed_bytes);
        match self.bounded(named).await {
            Ok(_) => debug!(image = %reference, "named {origin} after the mirror's pull"),
            Err(f) => {
                let why = explain(&origin, &f);
                info!(
                    image = %reference,
                    class = f.class.as_str(),
                    "pulled through a mirror, but {origin} does not name it here (a workload \
                     naming the image by that digest would pull from the origin): {why}"
                );
            }
        }
    }

    /// Points the reference's tag at `source` (a local image ID or `name@digest`). A digest
    /// pull leaves the image untagged, which `docker image prune` would take as dangling.
    async fn name(&self, reference: &ImageRef, source: &str) -> Result<(), Failure> {
        match reference.tag() {
            Some(tag) => self.engine.tag(source, &reference.name(), tag).await,
            None => Ok(()),
        }
    }

    /// `work` within `pull.timeout` (see [`within`]).
    pub(super) async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        within(self.config.pull.timeout, work).await
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts run out; sleeps with
    /// backoff between attempts, and starts none once stopping. Returns the attempts made.
    /// `failed`: the attempts already made and the last one's failure, when this takes up an
    /// operation tried before (a resolution that failed while planning).
    pub(super) async fn with_retries<T, F, Fut>(
        &self,
        image: &ImageRef,
        what: Op,
        failed: Option<(u32, Failure)>,
        mut op: F,
    ) -> (Retried<Result<T, Failure>, Failure>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = self.config.pull.retry;
        let (result, attempts) = self
            .stop
            .retry_after(
                policy,
                failed,
                |attempt| {
                    if what == Op::Pull {
                        info!(image = %image, attempt, "pulling");
                    }
                    self.progress.step(Step::Attempt(image));
                    let tried = op();
                    async move {
                        match tried.await {
                            Ok(v) => Attempt::Done(Ok(v)),
                            Err(f) if !f.is_retryable() || attempt >= policy.attempts() => {
                                Attempt::Done(Err(f))
                            }
                            Err(f) => Attempt::Again(f),
                        }
                    }
                },
                |failure, attempt, delay| {
                    self.progress.step(Step::Retry(delay));
                    debug!(image = %image, detail = failure.detail, "{what} failed");
                    warn!(
                        image = %image,
                        class = failure.class.as_str(),
                        attempt,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "{what} failed, will retry: {}",
                        explain(image, failure)
                    );
                },
            )
            .await;
        // The last failure is the caller's to log: it knows what the failure means for the
        // image (a pinned digest gone, a kept image), and one event says it once.
        (result, attempts)
    }

    /// Credentials for `registry`, looked up once per run and registry (a credential helper is
    /// a process, and concurrent pulls from one registry must not each start one).
    async fn auth_for(&self, registry: &str, cache: &AuthCache) -> Option<RegistryAuth> {
        let cell = cache
            .0
            .locked()
            .entry(registry.to_owned())
            .or_default()
            .clone();
        cell.get_or_init(|| {
            self.credentials
                .lookup_timed(registry, "pulling anonymously")
        })
        .await
        .clone()
    }
}

/// The operations retried, as logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Asking a registry for a tag's digest.
    Resolve,
    /// Pulling by digest.
    Pull,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Resolve => "resolve",
            Op::Pull => "pull",
        })
    }
}

/// What the images of one run share.
#[derive(Default)]
pub(super) struct RunShared {
    /// One credential lookup per registry.
    auths: AuthCache,
    /// One pull or tag at a time per content digest. Two required names of the same content
    /// are otherwise pulled and tagged at once, and Podman 4.3 was seen to lose one of the
    /// names (its image names are rewritten from a list read before the other change landed).
    content: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RunShared {
    /// Waits until no other image of the run works on `digest`, and holds it until dropped.
    async fn hold(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .content
            .locked()
            .entry(digest.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// One credential lookup per registry and run.
#[derive(Default)]
struct AuthCache(Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<RegistryAuth>>>>>);

/// `work`, or a network failure once `limit` (`pull.timeout`) has passed without a result: no
/// registry question or pull may hang its loop (a registry that accepts a connection and never
/// answers would).
pub(crate) async fn within<T>(
    limit: std::time::Duration,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(Failure::new(
            FailureClass::Network,
            format!(
                "stowage gave up: no result within pull.timeout ({})",
                humantime::format_duration(limit)
            ),
        ))
    })
}

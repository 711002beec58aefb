//! The long-running daemon: the one place where schedules, work and shutdown meet.
//!
//! [`run`] pulls what is required at boot, then on each schedule, and (when the config has
//! `[prune]` rules) prunes on its own schedule and at the high watermark, side by side with the
//! pulls, until the `shutdown` future completes. Then no new pull, retry or removal starts,
//! in-flight pulls get `pull.shutdown_grace` to finish, and whatever is still running after that
//! is abandoned (dropping a pull closes its connection, and the engine cancels it).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::converge::{InFlight, Outcome, Puller, Session, SessionError, Summary};
use crate::engine::docker::{ConnectError, DockerEngine};
use crate::engine::{Engine, Store};
use crate::failure::FailureClass;
use crate::lockfile::LockFile;
use crate::metrics::Metrics;
use crate::pin::Pinned;
use crate::pruner::Pruner;
use crate::readiness::{Missing, Notifier, missing, ready_status, waiting_status};
use crate::retry::RetryPolicy;
use crate::schedule::{Schedule, splay_offset};

/// Longest single sleep while waiting for a scheduled time. The wall clock is re-read after each,
/// so a clock that jumps (NTP stepping it at boot, a suspended VM) does not delay a run by the
/// size of the jump.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How patiently the daemon waits for an engine that is not up yet: forever, every 1 s at
/// first, then at most every 30 s.
const ENGINE_WAIT: RetryPolicy = RetryPolicy {
    retries: u32::MAX,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// Runs the daemon until `shutdown` completes, then drains.
///
/// Each message on `reloads` (SIGHUP) re-reads the config file and the lock. A valid new
/// config replaces the running one: work under way drains as on shutdown, then the new config
/// starts with a pass over every required image. An invalid one is reported, file and line,
/// and changes nothing: the running config goes on undisturbed.
pub async fn run<E: Engine + Store>(
    session: Session,
    engine: E,
    notifier: &Notifier,
    metrics: &Metrics,
    reloads: &mut mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut session = session;
    let mut first = session.config.pull.on_boot.then_some("boot");
    while let Some(next) = run_session(
        &session,
        &engine,
        notifier,
        metrics,
        first,
        reloads,
        &mut shutdown,
    )
    .await
    {
        session = next;
        first = Some("reload");
    }
    info!("stopped");
}

/// Runs one config until shutdown (`None`) or a valid reload (the new session), then drains.
async fn run_session<E: Engine + Store>(
    session: &Session,
    engine: &E,
    notifier: &Notifier,
    metrics: &Metrics,
    first: Option<&str>,
    reloads: &mut mpsc::Receiver<()>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Session> {
    let stop = CancellationToken::new();
    let in_flight = InFlight::default();
    let mut puller = session.puller(engine, stop.clone(), in_flight.clone());
    puller.prune_pins = true;
    // Image uses are followed only when the config prunes: nothing else needs them.
    let watch = async {
        if session.config.prune.is_some() {
            crate::pruner::watch_uses(engine, &session.state, &session.config.state_file, &stop)
                .await;
        }
    };
    let work = async {
        tokio::join!(serve(session, &puller, notifier, metrics, first), watch);
    };
    tokio::pin!(work);
    // A reload under way: polled beside the work and the shutdown, so neither waits on it (it
    // asks the engine, which may be slow).
    let mut reloading: Option<Pin<Box<dyn Future<Output = Option<Session>> + '_>>> = None;
    let next = loop {
        tokio::select! {
            () = &mut work => return None,
            () = &mut *shutdown => break None,
            Some(()) = reloads.recv(), if reloading.is_none() => {
                reloading = Some(Box::pin(reload(&session.config, engine, notifier, metrics)));
            }
            next = async { reloading.as_mut().expect("guarded by the condition").await },
                if reloading.is_some() =>
            {
                reloading = None;
                if let Some(next) = next {
                    break Some(next);
                }
            }
        }
    };
    if next.is_none() {
        notifier.stopping();
    }
    let grace = session.config.pull.shutdown_grace;
    info!(
        in_flight = in_flight.snapshot().len(),
        grace = %humantime::format_duration(grace),
        "{}: no new pulls start; waiting for in-flight pulls",
        if next.is_some() { "switching to the new config" } else { "stopping" }
    );
    stop.cancel();
    if tokio::time::timeout(grace, work).await.is_err() {
        warn!(
            abandoned = ?in_flight.snapshot(),
            "abandoned in-flight pulls at the end of pull.shutdown_grace"
        );
    }
    if let Some(next) = &next {
        // The drained work may have saved first-pull pins since the new session read the file.
        next.reread_state();
    }
    next
}

/// Reads the running config's file and its lock again, and sets up a session for them; `None`
/// (reported, nothing changed) when they are invalid or the engine cannot say its platform.
async fn reload<E: Engine>(
    running: &Config,
    engine: &E,
    notifier: &Notifier,
    metrics: &Metrics,
) -> Option<Session> {
    let path = running.source.as_path();
    notifier.reloading();
    info!(config = %path.display(), "reloading the config and the lock");
    let result = match crate::pin::load(path) {
        Ok((config, lock, _)) => Session::new(config, lock, engine)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(session) => {
            info!(
                images = session.config.images.len(),
                "reloaded: the new config takes over"
            );
            if session.config.metrics != running.metrics {
                warn!(
                    "[metrics] changed: the metrics endpoint moves at the next restart, not \
                     on reload"
                );
            }
            metrics.reload(true);
            notifier.reloaded("reloaded; converging on the new config");
            Some(session)
        }
        Err(problems) => {
            error!("reload failed; the running config stays in force:\n{problems}");
            metrics.reload(false);
            let first = problems.lines().next().unwrap_or_default();
            notifier.reloaded(&format!(
                "reload failed, running the previous config: {first}"
            ));
            None
        }
    }
}

/// Connects to the engine and sets up the session, waiting for the engine as long as it takes
/// (or until `stop`). `Ok(None)` means stopped while waiting.
pub async fn prepare(
    config: Config,
    lock: Option<LockFile>,
    host: Option<&str>,
    stop: &CancellationToken,
) -> Result<Option<(DockerEngine, Session)>, StartError> {
    let policy = ENGINE_WAIT;
    let mut attempt = 0;
    loop {
        let Some(engine) = connect_docker(host, stop)
            .await
            .map_err(StartError::Connect)?
        else {
            return Ok(None);
        };
        match Session::new(config.clone(), lock.clone(), &engine).await {
            Ok(session) => return Ok(Some((engine, session))),
            Err(SessionError::Config(problems)) => return Err(StartError::Config(problems)),
            Err(SessionError::Engine(failure)) => {
                attempt += 1;
                let delay = policy.delay(attempt, rand::random::<f64>());
                warn!("engine: {}", failure.detail);
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Why the daemon cannot start at all (as opposed to waiting for the engine).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine address can never work.
    #[error("{0}")]
    Connect(ConnectError),
    /// The lock cannot serve this host.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<crate::config::Problem>),
}

/// Connects to the Docker engine, retrying until it answers or `stop` is cancelled: at boot the
/// engine may still be starting, and a daemon should wait for it rather than exit. `Ok(None)`
/// means stopped while waiting; an address that can never work is an error at once.
pub async fn connect_docker(
    host: Option<&str>,
    stop: &CancellationToken,
) -> Result<Option<DockerEngine>, ConnectError> {
    let policy = ENGINE_WAIT;
    let mut attempt = 0;
    loop {
        match DockerEngine::connect(host).await {
            Ok(engine) => return Ok(Some(engine)),
            Err(ConnectError::Unreachable(failure)) => {
                attempt += 1;
                let delay = policy.delay(attempt, rand::random::<f64>());
                warn!(
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "engine: {}", failure.detail
                );
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(bad) => return Err(bad),
        }
    }
}

/// A schedule and the images it refreshes.
struct Group {
    schedule: Schedule,
    images: Vec<Pinned>,
    next: Option<DateTime<Local>>,
}

/// Images grouped by the schedule that refreshes them: `pull.schedule` for those without one of
/// their own, then one group per distinct per-image schedule.
fn groups(session: &Session) -> Vec<Group> {
    let config = &session.config;
    let mut groups = vec![Group {
        schedule: config.pull.schedule.clone(),
        images: session.pinned_on(None),
        next: None,
    }];
    for image in &config.images {
        if let Some(s) = &image.schedule
            && !groups.iter().skip(1).any(|g| g.schedule == *s)
        {
            groups.push(Group {
                schedule: s.clone(),
                images: session.pinned_on(Some(s.expr())),
                next: None,
            });
        }
    }
    groups.retain(|g| !g.images.is_empty());
    groups
}

async fn serve<E: Engine + Store>(
    session: &Session,
    puller: &Puller<'_, E>,
    notifier: &Notifier,
    metrics: &Metrics,
    first: Option<&str>,
) {
    let config = &session.config;
    let offset = splay_offset(config.pull.splay, rand::random::<f64>());
    info!(
        config = %config.source.display(),
        images = config.images.len(),
        splay_offset = %humantime::format_duration(Duration::from_secs(offset.as_secs())),
        "stowage started"
    );
    // Pulls and prunes run side by side: a long pull (a slow registry, a big image) must not
    // hold off a prune while the disk fills, nor a long prune cycle delay a scheduled pull.
    // They share the in-flight set, so a prune never removes what a pull is fetching.
    tokio::join!(
        serve_pulls(session, puller, notifier, metrics, first, offset),
        async {
            if let Some(settings) = &config.prune {
                let pruner = session.pruner(
                    puller.engine,
                    settings,
                    puller.in_flight.clone(),
                    puller.stop.clone(),
                );
                serve_prunes(&pruner, metrics, offset).await;
            }
        }
    );
}

/// The boot pull, then each pull schedule, until stopped. Images a pass leaves missing are
/// retried with backoff until present; the service manager hears "ready" once none is missing.
async fn serve_pulls<E: Engine>(
    session: &Session,
    puller: &Puller<'_, E>,
    notifier: &Notifier,
    metrics: &Metrics,
    first: Option<&str>,
    offset: Duration,
) {
    let total = session.pinned.len();
    let required: Vec<String> = session
        .pinned
        .iter()
        .map(|p| p.image.reference.to_string())
        .collect();
    let mut shortfall = Shortfall::default();
    let mut retry_at: Option<DateTime<Local>> = None;
    // After each pass: what is missing now, what systemd is told, when to retry.
    let settle = |shortfall: &mut Shortfall,
                  trigger: &str,
                  images: &[Pinned],
                  outcomes: Option<Vec<Outcome>>| {
        if let Some(outcomes) = &outcomes {
            metrics.pass(trigger, outcomes);
        }
        shortfall.record(images, outcomes.as_deref());
        let missing = shortfall.list();
        metrics.presence(required.iter().map(String::as_str), &missing);
        if missing.is_empty() {
            notifier.ready(&ready_status(total));
            metrics.ready();
            None
        } else {
            notifier.status(&waiting_status(&missing, total));
            shortfall.attempt += 1;
            let delay = MISSING_RETRY.delay(shortfall.attempt, rand::random::<f64>());
            info!(
                missing = missing.len(),
                retry_in = %humantime::format_duration(Duration::from_secs(delay.as_secs().max(1))),
                "not every required image is present; retrying those"
            );
            Some(Local::now() + delay)
        }
    };
    // The first pass: at boot (unless pull.on_boot is off), and after each reload.
    if let Some(trigger) = first {
        if !notifier.is_ready() {
            notifier.status(&format!("pulling {total} required images"));
        }
        let outcomes = pass(puller, trigger, &session.pinned).await;
        retry_at = settle(&mut shortfall, trigger, &session.pinned, outcomes);
    } else {
        notifier.ready("ready: no boot pull (pull.on_boot = false)");
        metrics.ready();
    }
    let mut groups = groups(session);
    for g in &mut groups {
        g.next = g.schedule.next_after(&Local::now(), offset);
        match g.next {
            Some(at) => info!(
                schedule = g.schedule.expr(),
                images = g.images.len(),
                next = %at.to_rfc3339(),
                "scheduled: {}", g.schedule.describe()
            ),
            None => warn!(schedule = g.schedule.expr(), "schedule never fires again"),
        }
    }
    loop {
        if puller.stop.is_cancelled() {
            return;
        }
        let next_group = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.next.map(|at| (i, at)))
            .min_by_key(|(_, at)| *at);
        // The retry of missing images goes first when it is due no later than a schedule.
        let (at, group) = match (next_group, retry_at) {
            (Some((i, g)), Some(r)) if g < r => (g, Some(i)),
            (_, Some(r)) => (r, None),
            (Some((i, g)), None) => (g, Some(i)),
            (None, None) => {
                // Nothing scheduled: idle until stopped.
                puller.stop.cancelled().await;
                return;
            }
        };
        if !sleep_until(at, &puller.stop).await {
            return;
        }
        match group {
            None => {
                let images = shortfall.images();
                let outcomes = pass(puller, "retry", &images).await;
                retry_at = settle(&mut shortfall, "retry", &images, outcomes);
            }
            Some(index) => {
                let group = &mut groups[index];
                let outcomes = pass(puller, "schedule", &group.images).await;
                retry_at = settle(&mut shortfall, "schedule", &group.images, outcomes);
                group.next = group.schedule.next_after(&Local::now(), offset);
                if let Some(next) = group.next {
                    debug!(schedule = group.schedule.expr(), next = %next.to_rfc3339(), "next run");
                }
            }
        }
    }
}

/// How images that a pass left missing are retried: soon at first, then at most every five
/// minutes (a registry that is down for long is not hammered, and one that recovers is used).
const MISSING_RETRY: RetryPolicy = RetryPolicy {
    retries: u32::MAX,
    initial: Duration::from_secs(2),
    max: Duration::from_secs(300),
};

/// The required images that are not there, by name, and how many retries they have had.
#[derive(Debug, Default)]
struct Shortfall {
    missing: BTreeMap<String, (Pinned, Missing)>,
    attempt: u32,
    /// The images a pass has seen in the store (present or not) at least once.
    known: std::collections::BTreeSet<String>,
}

impl Shortfall {
    /// Takes in a pass over `images`: what it left present is no longer missing, what it did
    /// not is. `None`: the engine could not be read. An image no pass has seen yet counts as
    /// missing then; what was seen stands.
    fn record(&mut self, images: &[Pinned], outcomes: Option<&[Outcome]>) {
        let name = |p: &Pinned| p.image.reference.to_string();
        let gone: Vec<Missing> = match outcomes {
            Some(outcomes) => {
                self.known.extend(images.iter().map(name));
                missing(outcomes)
            }
            None => images
                .iter()
                .filter(|p| !self.known.contains(&name(p)))
                .map(|p| Missing {
                    name: name(p),
                    class: Some(FailureClass::Engine),
                })
                .collect(),
        };
        for p in images {
            if outcomes.is_some() || !self.known.contains(&name(p)) {
                self.missing.remove(&name(p));
            }
        }
        for m in gone {
            if let Some(p) = images
                .iter()
                .find(|p| p.image.reference.to_string() == m.name)
            {
                self.missing.insert(m.name.clone(), (p.clone(), m));
            }
        }
        if self.missing.is_empty() {
            self.attempt = 0;
        }
    }

    fn images(&self) -> Vec<Pinned> {
        self.missing.values().map(|(p, _)| p.clone()).collect()
    }

    fn list(&self) -> Vec<Missing> {
        self.missing.values().map(|(_, m)| m.clone()).collect()
    }
}

/// Prune cycles on `prune.schedule`, and whenever the disk holding the engine's data root
/// crosses the high watermark (checked at every wake-up, at most every 30 s; such cycles at most
/// once a minute), until stopped.
async fn serve_prunes<S: Store>(pruner: &Pruner<'_, S>, metrics: &Metrics, offset: Duration) {
    let data_root = pruner.store.data_root().await.ok().flatten();
    let mut next = pruner.settings.schedule.next_after(&Local::now(), offset);
    match next {
        Some(at) => {
            info!(schedule = pruner.settings.schedule.expr(), next = %at.to_rfc3339(), "prune scheduled")
        }
        None => warn!(
            schedule = pruner.settings.schedule.expr(),
            "prune schedule never fires again"
        ),
    }
    let mut last_watermark_prune: Option<std::time::Instant> = None;
    loop {
        let over_watermark = || {
            let Some(disk) = data_root.as_deref().and_then(crate::pruner::disk_of) else {
                return false;
            };
            metrics.disk(disk.used, disk.total);
            above_high_watermark(pruner, disk)
                && last_watermark_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        };
        // Without a schedule, wake up only for the watermark.
        let at = next.unwrap_or_else(|| Local::now() + chrono::Duration::days(3650));
        let watermark = match sleep_until_or(at, &pruner.stop, over_watermark).await {
            Wake::Stopped => return,
            Wake::Due => false,
            Wake::Early => true,
        };
        let trigger = if watermark { "watermark" } else { "schedule" };
        info!(trigger, "prune cycle started");
        match pruner.cycle(false).await {
            Ok(cycle) => metrics.prune(trigger, &cycle),
            Err(f) => error!("prune cycle failed: engine: {}", f.detail),
        }
        if let Some(disk) = data_root.as_deref().and_then(crate::pruner::disk_of) {
            metrics.disk(disk.used, disk.total);
        }
        if pruner.stop.is_cancelled() {
            return;
        }
        if watermark {
            last_watermark_prune = Some(std::time::Instant::now());
        } else {
            next = pruner.settings.schedule.next_after(&Local::now(), offset);
        }
    }
}

/// Why a [`sleep_until_or`] ended.
enum Wake {
    /// The time came.
    Due,
    /// The early condition held first.
    Early,
    /// Stopping.
    Stopped,
}

/// Sleeps until the wall clock reaches `at`, in naps of at most [`MAX_SLEEP`], checking `early`
/// after each nap.
async fn sleep_until_or(
    at: DateTime<Local>,
    stop: &CancellationToken,
    mut early: impl FnMut() -> bool,
) -> Wake {
    loop {
        let left = (at - Local::now()).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Wake::Due;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            () = stop.cancelled() => return Wake::Stopped,
        }
        if early() {
            return Wake::Early;
        }
    }
}

/// Sleeps until `at`; false when stopped first.
async fn sleep_until(at: DateTime<Local>, stop: &CancellationToken) -> bool {
    !matches!(sleep_until_or(at, stop, || false).await, Wake::Stopped)
}

/// Whether the data root's filesystem is above the high watermark.
fn above_high_watermark<S: Store>(pruner: &Pruner<'_, S>, disk: crate::prune::Disk) -> bool {
    match pruner.settings.limits.high_watermark {
        Some(high) if disk.total > 0 => disk.used as f64 * 100.0 / disk.total as f64 > high,
        _ => false,
    }
}

/// One pass over `images`: the outcome of each, or `None` when the engine could not be read.
async fn pass<E: Engine>(
    puller: &Puller<'_, E>,
    trigger: &str,
    images: &[Pinned],
) -> Option<Vec<Outcome>> {
    info!(trigger, images = images.len(), "run started");
    match puller.converge(images).await {
        Ok(outcomes) => {
            let s = Summary::of(&outcomes);
            info!(
                trigger,
                pulled = s.pulled,
                up_to_date = s.up_to_date,
                tagged = s.tagged,
                kept = s.kept,
                failed = s.failed,
                skipped = s.skipped,
                "run finished"
            );
            Some(outcomes)
        }
        Err(failure) => {
            error!(trigger, "run failed: engine: {}", failure.detail);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::PullResult;
    use crate::pin::PinMode;
    use crate::plan::{Action, Decision, Presence};

    fn pinned(name: &str) -> Pinned {
        Pinned::for_tests(name, PinMode::Follow)
    }

    fn outcome(p: &Pinned, result: PullResult) -> Outcome {
        Outcome {
            decision: Decision {
                pinned: p.clone(),
                digest: None,
                state: Presence::Missing,
                local_digest: None,
                drift: false,
                action: Action::Pull,
                reason: String::new(),
                failure: None,
                holder: None,
                resolve_attempts: 0,
            },
            result,
            attempts: 1,
            elapsed_ms: 0,
        }
    }

    fn failed() -> PullResult {
        PullResult::Failed {
            class: FailureClass::Network,
            message: "down".into(),
        }
    }

    fn names(s: &Shortfall) -> Vec<String> {
        s.list().into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn a_shortfall_follows_what_each_pass_got() {
        let (a, b) = (pinned("r.example/a:1"), pinned("r.example/b:1"));
        let mut s = Shortfall::default();
        // Before any pass read the store, an unreadable engine leaves everything missing.
        s.record(&[a.clone(), b.clone()], None);
        assert_eq!(names(&s), ["r.example/a:1", "r.example/b:1"]);
        s.record(
            &[a.clone(), b.clone()],
            Some(&[outcome(&a, PullResult::Kept), outcome(&b, failed())]),
        );
        assert_eq!(names(&s), ["r.example/b:1"]);
        // Once seen, an unreadable engine changes nothing: a is not reported missing. An image
        // no pass has seen yet (c, on a schedule of its own) is.
        let c = pinned("r.example/c:1");
        s.record(&[a.clone(), b.clone(), c.clone()], None);
        assert_eq!(names(&s), ["r.example/b:1", "r.example/c:1"]);
        s.record(
            std::slice::from_ref(&c),
            Some(&[outcome(&c, PullResult::Kept)]),
        );
        assert_eq!(names(&s), ["r.example/b:1"]);
        // A retry covers only b; a pass over a alone leaves b's entry as it was.
        s.record(std::slice::from_ref(&a), Some(&[outcome(&a, failed())]));
        assert_eq!(names(&s), ["r.example/a:1", "r.example/b:1"]);
        s.attempt = 3;
        let tagged = PullResult::Tagged {
            digest: "sha256:00".into(),
        };
        s.record(
            &[a.clone(), b.clone()],
            Some(&[outcome(&a, tagged), outcome(&b, PullResult::Kept)]),
        );
        assert!(names(&s).is_empty());
        assert_eq!(
            s.attempt, 0,
            "the backoff starts over once nothing is missing"
        );
    }
}

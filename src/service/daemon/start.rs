//! Starting the daemon: SIGHUP, the metrics endpoint and readiness from the first moment, then
//! the engine, waited for as long as it takes, then [`super::run`].

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

use crate::io::engine::docker::{ConnectError, DockerEngine};
use crate::policy::config::ConfigError;
use crate::policy::retry::RetryPolicy;
use crate::service::metrics::{self, Metrics, Probes};
use crate::service::pruner::{OwnImageError, own_image};
use crate::service::readiness::Notifier;
use crate::service::session::{Loaded, Session, SessionError};
use crate::service::shutdown::{Attempt, Retried, Shutdown};

/// How patiently the daemon waits for an engine that is not up yet: forever, every 1 s at
/// first, then at most every 30 s.
const ENGINE_WAIT: RetryPolicy = RetryPolicy {
    retries: u32::MAX,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// Why the daemon cannot start at all (as opposed to waiting for the engine).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The engine address can never work.
    #[error("{0}")]
    Connect(ConnectError),
    /// The lock cannot serve this host.
    #[error("{0}")]
    Config(ConfigError),
    /// The metrics endpoint cannot listen.
    #[error("{0}")]
    Metrics(String),
    /// `STOWAGE_OWN_IMAGE_ID` names no image.
    #[error("{0}")]
    OwnImage(String),
}

/// `stowage run`: the daemon, from start to stop. Returns once `shutdown` was triggered and
/// the work drained, or at once when it cannot start.
pub(crate) async fn start(
    loaded: Loaded,
    host: Option<&str>,
    shutdown: &Shutdown,
) -> Result<(), StartError> {
    let Loaded { config, lock } = loaded;
    let mut reloads = listen_for_reloads();
    // The start counts from here: waiting for the engine is part of it.
    let ready_timeout = config.pull.ready_timeout;
    let notifier = Notifier::from_env();
    let started = tokio::time::Instant::now();
    // Ends the metrics endpoint and the start-up hold once the daemon is done.
    let done = Shutdown::new();
    let probes = Probes::new(Metrics::new(), notifier);
    let (notifier, metrics) = (&probes.notifier, &probes.metrics);
    // Served from the start (engine wait included), so a scrape sees a daemon that is up but
    // not ready yet.
    let listener = match config.metrics {
        Some(addr) => Some((
            addr,
            metrics::bind(addr).await.map_err(StartError::Metrics)?,
        )),
        None => None,
    };
    if config.images.is_empty() {
        // Nothing to wait for, not even the engine (a fresh package install, say); said once
        // the metrics address is bound, so that a daemon about to exit is never ready.
        notifier.ready("ready: the config requires no image");
    }
    // The listener and the watchdog run as tasks of their own, on another worker than the
    // daemon's loops: a loop that wedges its thread must still be reported (`/healthz` 503)
    // and leave the watchdog unfed, rather than silence both. A reload moves the listener
    // (`[metrics] listen` added, changed or removed) through `endpoint`.
    let (endpoint, serving) = metrics::serve(listener, probes.clone(), done.clone());
    let serve_metrics = tokio::spawn(serving);
    let watchdog = tokio::spawn({
        let (probes, done) = (probes.clone(), done.clone());
        async move { probes.notifier.feed_watchdog(&probes.health, &done).await }
    });
    let hold = async {
        notifier.hold_start(started, ready_timeout, &done).await;
        if notifier.is_ready() {
            metrics.ready();
        }
    };
    let daemon = async {
        let result = match shutdown.until(prepare(config, lock, host, shutdown)).await {
            Some(Ok(Some((engine, session)))) => {
                let outside = super::Outside {
                    probes: &probes,
                    endpoint: &endpoint,
                    reloads: &mut reloads,
                };
                super::run(session, engine, outside, shutdown).await;
                Ok(())
            }
            Some(Ok(None)) | None => {
                notifier.stopping();
                Ok(())
            }
            Some(Err(e)) => Err(e),
        };
        done.trigger();
        result
    };
    let (result, ()) = tokio::join!(daemon, hold);
    // Both end with `done`.
    for task in [serve_metrics, watchdog] {
        let _ = task.await;
    }
    result
}

/// SIGHUP, as a message per reload. Caught from the start, since its default action would end
/// the process. Signals that arrive during a reload are folded into one more reload.
fn listen_for_reloads() -> mpsc::Receiver<()> {
    let (reload, reloads) = mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("received SIGHUP");
                    let _ = reload.try_send(());
                }
            });
        }
        Err(e) => tracing::error!("cannot listen for SIGHUP: {e}; reload means restart"),
    }
    reloads
}

/// Connects to the engine and sets up the session, waiting for the engine as long as it takes
/// (or until `stop`): at boot the engine may still be starting, and a daemon should wait for it
/// rather than exit. `Ok(None)` means stopped while waiting; an address that can never work,
/// or a lock that cannot serve this host, is an error at once.
pub(super) async fn prepare(
    config: crate::policy::config::Config,
    lock: Option<crate::policy::lockfile::LockFile>,
    host: Option<&str>,
    stop: &Shutdown,
) -> Result<Option<(DockerEngine, Session)>, StartError> {
    let attempt = |_| {
        let (config, lock) = (config.clone(), lock.clone());
        async move {
            let engine = match DockerEngine::connect(host).await {
                Ok(engine) => engine,
                Err(ConnectError::Unreachable(f)) => return Attempt::Again(f),
                Err(bad) => return Attempt::Done(Err(StartError::Connect(bad))),
            };
            match Session::new(config, lock, &engine).await {
                Ok(session) => match own_image(&engine).await {
                    Ok(_) => Attempt::Done(Ok((engine, session))),
                    Err(OwnImageError::Invalid(why)) => {
                        Attempt::Done(Err(StartError::OwnImage(why)))
                    }
                    Err(OwnImageError::Engine(f)) => Attempt::Again(f),
                },
                Err(SessionError::Config(e)) => Attempt::Done(Err(StartError::Config(e))),
                Err(SessionError::Engine(f)) => Attempt::Again(f),
            }
        }
    };
    let on_retry = |f: &crate::model::failure::Failure, _: u32, delay: Duration| {
        warn!(
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "engine: {f}"
        );
    };
    match stop.retry(ENGINE_WAIT, attempt, on_retry).await.0 {
        Retried::Done(result) => result.map(Some),
        Retried::Stopped(_) => Ok(None),
    }
}

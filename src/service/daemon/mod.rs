//! The long-running daemon: the one place where schedules, work and shutdown meet.
//!
//! [`run`] pulls what is required at boot, then on each schedule, and (when the config has
//! `[prune]` rules) prunes on its own schedule and at the high watermark, side by side with the
//! pulls, until `shutdown` is triggered. Then no new pull, retry or removal starts, in-flight
//! pulls get `pull.shutdown_grace` to finish, and whatever is still running after that is
//! abandoned (dropping a pull closes its connection, and the engine cancels it).

mod beats;
mod prunes;
mod pulls;
mod start;
#[cfg(test)]
mod tests;
mod updates;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::io::engine::{Engine, Store};
use crate::policy::config::Config;
use crate::policy::schedule::splay_offset;
use crate::service::health::Health;
use crate::service::in_flight::InFlight;
use crate::service::metrics::{Endpoint, Metrics, Moved, Probes};
use crate::service::puller::PinUpkeep;
use crate::service::readiness::Notifier;
use crate::service::session::{Loaded, Session, load};
use crate::service::shutdown::Shutdown;
use crate::service::uses::watch_uses;

use beats::{PruneBeat, PullBeat};

pub(crate) use start::{StartError, start};

/// Runs the daemon until `shutdown` is triggered, then drains.
///
/// Each message on `reloads` (SIGHUP) re-reads the config file and the lock. A valid new
/// config replaces the running one: work under way drains as on shutdown, then the new config
/// starts with a pass over every required image. An invalid one is reported, file and line,
/// and changes nothing: the running config goes on undisturbed.
pub(crate) async fn run<E: Engine + Store>(
    session: Session,
    engine: E,
    outside: Outside<'_>,
    shutdown: &Shutdown,
) {
    let mut session = session;
    let mut first = session.config.pull.on_boot.then_some("boot");
    let Outside {
        probes,
        endpoint,
        reloads,
    } = outside;
    let daemon = Daemon {
        engine: &engine,
        notifier: &probes.notifier,
        metrics: &probes.metrics,
        health: &probes.health,
        endpoint,
    };
    while let Some(next) = daemon.run_session(&session, first, reloads, shutdown).await {
        session = next;
        first = Some("reload");
    }
    info!("stopped");
}

/// What the daemon is told through and tells through, set up before it starts.
pub(crate) struct Outside<'a> {
    /// Metrics, health and readiness.
    pub(crate) probes: &'a Probes,
    /// The metrics endpoint, which a reload moves.
    pub(crate) endpoint: &'a Endpoint,
    /// SIGHUP.
    pub(crate) reloads: &'a mut mpsc::Receiver<()>,
}

/// What every session of the daemon shares.
struct Daemon<'a, E> {
    engine: &'a E,
    notifier: &'a Notifier,
    metrics: &'a Metrics,
    health: &'a Health,
    endpoint: &'a Endpoint,
}

impl<E: Engine + Store> Daemon<'_, E> {
    /// Runs one config until shutdown (`None`) or a valid reload (the new session), then
    /// drains.
    async fn run_session(
        &self,
        session: &Session,
        first: Option<&str>,
        reloads: &mut mpsc::Receiver<()>,
        shutdown: &Shutdown,
    ) -> Option<Session> {
        // This config's work stops with the process, and also when a reload replaces it.
        let stop = shutdown.child();
        let in_flight = InFlight::default();
        let beat = PullBeat {
            heartbeat: self.health.heartbeat("pulls"),
            attempt: session.config.pull.timeout,
        };
        let puller = session
            .puller(
                self.engine,
                stop.clone(),
                in_flight.clone(),
                PinUpkeep::Daemon,
            )
            .followed_by(&beat);
        let work = self.work(session, &puller, &beat, first, &stop);
        tokio::pin!(work);
        // A reload under way: polled beside the work and the shutdown, so neither waits on it
        // (it asks the engine, which may be slow).
        let mut reloading: Option<Pin<Box<dyn Future<Output = Option<Session>> + '_>>> = None;
        let next = loop {
            tokio::select! {
                // A shutdown goes first: the work it stops may finish in the same instant.
                biased;
                () = shutdown.triggered() => break None,
                () = &mut work => return None,
                Some(()) = reloads.recv(), if reloading.is_none() => {
                    reloading = Some(Box::pin(reload(&session.config, self)));
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
            self.notifier.stopping();
        }
        let grace = session.config.pull.shutdown_grace;
        let pulling = in_flight.snapshot().len();
        let what = if next.is_some() {
            "switching to the new config"
        } else {
            "stopping"
        };
        // Worth a line only when there is something to wait for.
        if pulling > 0 {
            info!(
                in_flight = pulling,
                grace = %humantime::format_duration(grace),
                "{what}: no new pulls start; waiting for in-flight pulls"
            );
        } else {
            debug!("{what}: no pull in flight");
        }
        if stop.drain(grace, work).await.is_none() {
            warn!(
                abandoned = ?in_flight.snapshot(),
                "abandoned in-flight pulls at the end of pull.shutdown_grace"
            );
        }
        if let Some(next) = &next {
            // The drained work may have saved first-pull pins since the new session read the
            // file.
            next.reread_state();
        }
        next
    }

    /// One config's work: pulls and prunes side by side, and (when it prunes) the following of
    /// image uses, until `stop`.
    async fn work(
        &self,
        session: &Session,
        puller: &crate::service::puller::Puller<'_, E>,
        beat: &PullBeat,
        first: Option<&str>,
        stop: &Shutdown,
    ) {
        let config = &session.config;
        let offset = splay_offset(config.pull.splay, rand::random::<f64>());
        // A reload serves a new config in the same process: "started" would read as a restart.
        let what = if first == Some("reload") {
            "config reloaded"
        } else {
            "stowage started"
        };
        info!(
            config = %config.source.display(),
            images = config.images.len(),
            splay_offset = %humantime::format_duration(std::time::Duration::from_secs(offset.as_secs())),
            "{what}"
        );
        // Image uses are followed only when the config prunes: nothing else needs them.
        let watch = async {
            if config.prune.is_some() {
                watch_uses(self.engine, &session.state, &config.state_file, stop).await;
            }
        };
        let pulls = pulls::Pulls::new(session, puller, self.notifier, self.metrics, beat, offset);
        // Pulls and prunes run side by side: a long pull (a slow registry, a big image) must
        // not hold off a prune while the disk fills, nor a long prune cycle delay a scheduled
        // pull. They share the in-flight set, so a prune never removes what a pull is fetching.
        let prunes = async {
            if let Some(settings) = &config.prune {
                let beat = PruneBeat {
                    heartbeat: self.health.heartbeat("prunes"),
                    pull: config.pull.timeout,
                };
                let pruner = session
                    .pruner(
                        self.engine,
                        settings,
                        puller.in_flight.clone(),
                        stop.clone(),
                    )
                    .followed_by(&beat);
                prunes::serve_prunes(&pruner, &beat, self.metrics, offset).await;
            }
        };
        let updates = async {
            if let Some(every) = config.check_updates {
                let heartbeat = self.health.heartbeat("updates");
                updates::serve_updates(session, self.metrics, &heartbeat, stop, every, offset)
                    .await;
            }
        };
        tokio::join!(pulls.serve(first), prunes, watch, updates);
    }
}

/// Serves the metrics on the reloaded config's address. A failed bind is not a failed reload:
/// the rest of the new config applies, and the old address serves on.
async fn move_endpoint(endpoint: &Endpoint, to: Option<std::net::SocketAddr>) {
    match endpoint.move_to(to).await {
        Ok(Moved::Unchanged) => {}
        Ok(Moved::To { from, to: Some(to) }) => {
            info!(from = ?from, "metrics endpoint now on {to}");
        }
        Ok(Moved::To { from, to: None }) => {
            info!(from = ?from, "metrics endpoint closed: the config has no [metrics]");
        }
        Err(e) => warn!("{e}"),
    }
}

/// Reads the running config's file and its lock again, and sets up a session for them; `None`
/// (reported, nothing changed) when they are invalid or the engine cannot say its platform.
async fn reload<E: Engine>(running: &Config, daemon: &Daemon<'_, E>) -> Option<Session> {
    let Daemon {
        engine,
        notifier,
        metrics,
        endpoint,
        ..
    } = daemon;
    let path = running.source.as_path();
    notifier.reloading();
    info!(config = %path.display(), "reloading the config and the lock");
    let result = match load(path) {
        Ok(Loaded { config, lock }) => Session::new(config, lock, *engine)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(session) => {
            // "config reloaded" is logged once the new config's work starts, after the drain:
            // one event for one reload.
            move_endpoint(endpoint, session.config.metrics).await;
            metrics.reload(true);
            notifier.reloaded("reloaded; converging on the new config");
            Some(session)
        }
        Err(problems) => {
            // One event per problem: a log line is an event, in journald and in JSON.
            // Each problem first, then what came of them, as `check` writes them.
            for problem in problems.lines() {
                error!("reload failed: {problem}");
            }
            let count = problems.lines().count();
            error!(
                problems = count,
                "reload failed; the running config stays in force"
            );
            metrics.reload(false);
            let first = problems.lines().next().unwrap_or_default();
            notifier.reloaded(&format!(
                "reload failed, running the previous config: {first}"
            ));
            None
        }
    }
}

//! What the service manager (systemd, `Type=notify`) is told about start-up.
//!
//! - `READY=1` once every required image is present, so units ordered after stowage start with
//!   their images in place; or, failing that, once `pull.ready_timeout` has passed since start
//!   ("degraded": a host that cannot get one image must still finish booting).
//! - `STATUS=` says what the daemon waits for, in `systemctl status`.
//! - `EXTEND_TIMEOUT_USEC=` while it waits, so the unit's start timeout is stowage's own
//!   `ready_timeout` rather than systemd's 90 s default.
//! - `STOPPING=1` on shutdown.
//!
//! Without `NOTIFY_SOCKET` (not under systemd), nothing is sent; readiness is still logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::sync::Locked;
use crate::service::health::Health;
use crate::service::shutdown::Shutdown;
use sd_notify::NotifyState;
use tracing::{debug, error, info, warn};

/// How often the start timeout is extended while waiting, and by how much each time: the
/// margin covers a busy host that wakes up late.
const EXTEND_EVERY: Duration = Duration::from_secs(20);
const EXTEND_BY: Duration = Duration::from_secs(60);

/// Tells the service manager how start-up goes. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    enabled: bool,
    ready: Arc<AtomicBool>,
    /// The last status sent, repeated (as degraded) if the deadline passes first.
    status: Arc<Mutex<String>>,
}

impl Notifier {
    /// A notifier for this process: sends only when `NOTIFY_SOCKET` is set.
    pub(crate) fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ready: Arc::default(),
            status: Arc::new(Mutex::new("starting".to_owned())),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            // Nothing to do about it but say so: the service still works.
            warn!("cannot notify the service manager: {e}");
        }
    }

    /// Keeps `status` as the last status line.
    fn remember(&self, status: &str) {
        *self.status.locked() = status.to_owned();
    }

    /// Sets the status line.
    pub(crate) fn status(&self, text: &str) {
        self.remember(text);
        debug!(status = text, "status");
        self.send(&[NotifyState::Status(text)]);
    }

    /// Reports ready (once; later calls only update the status line).
    pub(crate) fn ready(&self, status: &str) {
        self.remember(status);
        if self.ready.swap(true, Ordering::SeqCst) {
            self.send(&[NotifyState::Status(status)]);
        } else {
            info!(status, "ready");
            self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }

    /// The last status line sent.
    pub(crate) fn last_status(&self) -> String {
        self.status.locked().clone()
    }

    /// Whether ready was reported.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Reports that the config is being reloaded (`MONOTONIC_USEC` too: systemd's
    /// `Type=notify-reload` needs it, and older versions ignore it).
    pub(crate) fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Reports the reload over, whatever its result: ready again if it was ready before.
    pub(crate) fn reloaded(&self, status: &str) {
        self.remember(status);
        if self.is_ready() {
            self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        } else {
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// Reports stopping.
    pub(crate) fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Feeds the service manager's watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`) at half
    /// its interval, but only while every loop of `health` moves: a wedged daemon goes unfed,
    /// and systemd restarts it. Returns when `done` is triggered; at once without a watchdog.
    pub(crate) async fn feed_watchdog(&self, health: &Health, done: &Shutdown) {
        let Some(interval) = sd_notify::watchdog_enabled().filter(|_| self.enabled) else {
            return;
        };
        let every = (interval / 2).max(Duration::from_millis(100));
        info!(watchdog = %humantime::format_duration(interval), "feeding the service manager's watchdog");
        let mut starved = false;
        loop {
            let stuck = health.stuck();
            if stuck.is_empty() {
                if starved {
                    info!("every loop moves again; feeding the watchdog again");
                    starved = false;
                }
                self.send(&[NotifyState::Watchdog]);
            } else if !starved {
                starved = true;
                let why: Vec<String> = stuck.iter().map(ToString::to_string).collect();
                error!(
                    "{}; no longer feeding the watchdog, so the service manager restarts stowage",
                    why.join("; ")
                );
            }
            if !done.sleep(every).await {
                return;
            }
        }
    }

    /// Until ready: keeps the service manager's start timeout from running out, and at
    /// `deadline` after `started` reports ready anyway, degraded, with the last status. Returns
    /// once ready, or when `done` is triggered (the daemon ended).
    pub(crate) async fn hold_start(&self, started: Instant, deadline: Duration, done: &Shutdown) {
        loop {
            if self.is_ready() {
                return;
            }
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                let last = self.status.locked().clone();
                let status = format!("degraded: {last}");
                warn!(
                    ready_timeout = %humantime::format_duration(deadline),
                    "not every required image is present within pull.ready_timeout; reporting \
                     ready anyway and retrying: {last}"
                );
                self.ready(&status);
                return;
            }
            let usec =
                u32::try_from(EXTEND_BY.min(left + EXTEND_EVERY).as_micros()).unwrap_or(u32::MAX);
            self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
            if !done.sleep(EXTEND_EVERY.min(left)).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::shortfall::ready_status;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_reports_ready_degraded_with_the_last_status() {
        let n = Notifier::from_env();
        n.status("waiting for 1 of 2 images: r/a:1 (auth)");
        let started = Instant::now();
        let done = Shutdown::new();
        n.hold_start(started, Duration::from_secs(300), &done).await;
        assert!(n.is_ready());
        assert_eq!(
            *n.status.lock().unwrap(),
            "degraded: waiting for 1 of 2 images: r/a:1 (auth)"
        );
        // Ready already: a later hold returns at once, and ready again keeps it ready.
        n.hold_start(Instant::now(), Duration::ZERO, &done).await;
        n.ready(&ready_status(2, &[]));
        assert!(n.is_ready());
        assert_eq!(
            *n.status.lock().unwrap(),
            "ready: all 2 required images present"
        );
    }
}

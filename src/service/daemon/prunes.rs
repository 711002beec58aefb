//! The prune side of the daemon: cycles on `prune.schedule`, and at the high watermark.

use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use tracing::{error, info, warn};

use super::beats::PruneBeat;
use crate::io::engine::Store;
use crate::io::host::{disk_at, disk_of, give_back_memory};
use crate::model::image::Disk;
use crate::policy::window::{Window, next_run};
use crate::service::clock;
use crate::service::health::Heartbeat;
use crate::service::metrics::Metrics;
use crate::service::pruner::Pruner;
use crate::service::shutdown::Shutdown;

/// Longest single sleep while waiting for a scheduled time. The wall clock is re-read after each,
/// so a clock that jumps (NTP stepping it at boot, a suspended VM) does not delay a run by the
/// size of the jump.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Watermarks measure the filesystem of the engine's data root, which stowage must be able to
/// see: a container without the data root mounted, or a unit whose sandbox hides it
/// (`ProtectHome=` for a root under /home, `PrivateTmp=` under /tmp). Said once at start, or
/// the watermark would silently never fire.
fn warn_if_unmeasurable(high_watermark: Option<f64>, data_root: Option<&std::path::Path>) {
    let Some(high) = high_watermark else {
        return;
    };
    match data_root {
        None => warn!(
            high_watermark = high,
            "the engine does not say where its data root is: the disk watermarks cannot fire"
        ),
        Some(root) => {
            if let Err(e) = disk_at(root) {
                warn!(
                    high_watermark = high,
                    data_root = %root.display(),
                    "the engine's data root cannot be measured here ({e}): the disk \
                     watermarks cannot fire; mount it read-only at the same path (in a \
                     container), or make it visible to the unit"
                );
            }
        }
    }
}

/// Prune cycles on `prune.schedule`, and whenever the disk holding the engine's data root
/// crosses the high watermark (checked at every wake-up, at most every 30 s; such cycles at most
/// once a minute), until stopped.
pub(super) async fn serve_prunes<S: Store>(
    pruner: &Pruner<'_, S>,
    beat: &PruneBeat,
    metrics: &Metrics,
    offset: Duration,
) {
    metrics.prunes_configured(pruner.settings.limits.high_watermark);
    let data_root = pruner.store.data_root().await.ok().flatten();
    warn_if_unmeasurable(pruner.settings.limits.high_watermark, data_root.as_deref());
    pruner.warn_if_build_cache_ignored();
    let window = pruner.settings.window.as_ref();
    let next_run = || next_run(&pruner.settings.schedule, window, clock::now(), offset);
    let mut next = next_run();
    match next {
        Some(at) => info!(
            schedule = pruner.settings.schedule.expr(),
            next = %at.to_rfc3339(),
            window = window.map(Window::describe),
            "prune scheduled"
        ),
        None => warn!(
            schedule = pruner.settings.schedule.expr(),
            "prune schedule never fires again"
        ),
    }
    let mut last_watermark_prune: Option<std::time::Instant> = None;
    loop {
        // Without a schedule, wake up only for the watermark.
        let at = next.unwrap_or_else(|| clock::now() + chrono::Duration::days(3650));
        let over_watermark = || {
            let Some(disk) = data_root.as_deref().and_then(disk_of) else {
                return false;
            };
            metrics.disk(disk.used, disk.total);
            above_high_watermark(pruner, disk)
                && last_watermark_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        };
        let doing = "waiting for the next prune cycle";
        let woke = sleep_until_or(at, &pruner.stop, &beat.heartbeat, doing, over_watermark);
        let watermark = match woke.await {
            Wake::Stopped => return,
            Wake::Due => false,
            Wake::Early => true,
        };
        let trigger = if watermark { "watermark" } else { "schedule" };
        // A full disk does not wait for the window; a scheduled cycle stops when it closes.
        let closes = match window {
            Some(w) if !watermark => match w.open_at(clock::now().with_timezone(&Utc)) {
                Some(open) => Some(open.closes),
                None => {
                    // Woken outside it (the clock jumped): wait for the next opening.
                    next = next_run();
                    continue;
                }
            },
            _ => None,
        };
        info!(trigger, "prune cycle started");
        beat.planning();
        match pruner.cycle_within(false, closes).await {
            Ok(cycle) => metrics.prune(trigger, &cycle),
            Err(f) => {
                metrics.engine_up(false);
                error!("prune cycle failed: engine: {f}");
            }
        }
        if let Some(disk) = data_root.as_deref().and_then(disk_of) {
            metrics.disk(disk.used, disk.total);
        }
        give_back_memory();
        if pruner.stop.is_triggered() {
            return;
        }
        if watermark {
            last_watermark_prune = Some(std::time::Instant::now());
        } else {
            next = next_run();
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
/// after each nap. Before each nap `heartbeat` beats (`doing`, within the nap), so a sleeping
/// loop never counts as stuck however long it sleeps.
async fn sleep_until_or(
    at: DateTime<Local>,
    stop: &Shutdown,
    heartbeat: &Heartbeat,
    doing: &'static str,
    mut early: impl FnMut() -> bool,
) -> Wake {
    loop {
        let left = (at - clock::now()).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Wake::Due;
        }
        let nap = left.min(MAX_SLEEP);
        heartbeat.beat(doing, nap);
        if !stop.sleep(nap).await {
            return Wake::Stopped;
        }
        if early() {
            return Wake::Early;
        }
    }
}

/// Sleeps until `at`, beating `heartbeat` (`doing`) at every nap; false when stopped first.
pub(super) async fn sleep_until(
    at: DateTime<Local>,
    stop: &Shutdown,
    heartbeat: &Heartbeat,
    doing: &'static str,
) -> bool {
    let woke = sleep_until_or(at, stop, heartbeat, doing, || false).await;
    !matches!(woke, Wake::Stopped)
}

/// Whether the data root's filesystem is above the high watermark.
fn above_high_watermark<S: Store>(pruner: &Pruner<'_, S>, disk: Disk) -> bool {
    match pruner.settings.limits.high_watermark {
        Some(high) if disk.total > 0 => disk.used as f64 * 100.0 / disk.total as f64 > high,
        _ => false,
    }
}

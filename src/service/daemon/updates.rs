//! `pin.check_updates`: every interval, one question per pinned image to its registry (the
//! tag's digest, spread over the interval), and `stowage_image_update_available` from the
//! answers. Nothing is pulled or re-pinned: a lock changes when a new lock ships, a first-pull
//! pin when its entry changes. An unanswered question keeps the last answer.

use std::time::Duration;

use tracing::{debug, info};

use crate::decide::budget::check_held_back;
use crate::decide::pin::Pinned;
use crate::decide::updates::{checked, spread, update_available};
use crate::model::sync::Locked;
use crate::service::health::Heartbeat;
use crate::service::metrics::Metrics;
use crate::service::puller::within;
use crate::service::session::Session;
use crate::service::shutdown::Shutdown;

/// Checks the session's lock and first-pull pins every `every`, until `stop`.
pub(super) async fn serve_updates(
    session: &Session,
    metrics: &Metrics,
    heartbeat: &Heartbeat,
    stop: &Shutdown,
    every: Duration,
    offset: Duration,
) {
    let images: Vec<&Pinned> = session.pinned.iter().filter(|p| checked(p)).collect();
    if images.is_empty() {
        heartbeat.idle("no pinned image to check for updates");
        stop.triggered().await;
        return;
    }
    info!(
        images = images.len(),
        every = %humantime::format_duration(every),
        "checking pinned images for updates"
    );
    let limit = session.config.pull.timeout;
    let mut first = true;
    loop {
        let pauses = spread(images.len(), every, offset, first);
        first = false;
        for (p, pause) in images.iter().zip(pauses) {
            heartbeat.beat("waiting to check for updates", pause);
            if !stop.sleep(pause).await {
                return;
            }
            heartbeat.beat("checking for updates", limit);
            if stop
                .until(check(session, metrics, p, limit))
                .await
                .is_none()
            {
                return;
            }
        }
    }
}

/// One image: its pin against the tag's digest now.
async fn check(session: &Session, metrics: &Metrics, p: &Pinned, limit: Duration) {
    let Some(pinned) = p.known_digest(&session.state.locked()) else {
        return;
    };
    let reference = &p.image.reference;
    let registry = reference.registry();
    let budgets = session.registry.budgets();
    if check_held_back(
        budgets.get(registry),
        session.config.limit_shared_by(registry),
    ) {
        debug!(image = %reference, registry, "update check held back: the registry's rate limit is spent for this host's share");
        return;
    }
    metrics.budgets(&budgets);
    let asked = session
        .registry
        .resolve(reference, p.image.platform.as_deref());
    match within(limit, asked).await {
        Ok(now) => {
            let moved = update_available(&pinned, &now.digest, now.index.as_deref());
            if moved {
                debug!(image = %reference, pinned, tag_now = now.digest, "update available");
            }
            metrics.update_available(&reference.to_string(), moved);
        }
        Err(f) => debug!(image = %reference, "update check failed: {f}"),
    }
}

//! `stowage status`: each required image's pin, presence, digests and drift.

use std::path::Path;

use super::{connect_to_show, print};
use crate::cli::error::Error;
use crate::cli::report::{self, StatusRow};
use crate::decide::pin::PinMode;
use crate::decide::pull_plan::explain_for;
use crate::decide::pull_plan::{Action, Decision};
use crate::io::registry::Registry;
use crate::model::reference::ImageRef;
use crate::model::sync::Locked;
use crate::service::in_flight::InFlight;
use crate::service::puller::PinUpkeep;
use crate::service::shutdown::Shutdown;

/// Prints one row per required image; without `offline`, with what its registry says now.
/// With `exit_code`, fails (1) unless every image is as declared.
pub(crate) async fn status(
    config: &Path,
    host: Option<&str>,
    json: bool,
    exit_code: bool,
    offline: bool,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (engine, session) = connect_to_show(config, host, shutdown).await?;
    let puller = session.puller(
        &engine,
        Shutdown::new(),
        InFlight::default(),
        PinUpkeep::Command,
    );
    // Which images the plan itself resolves (follow, and first-pull without a pin yet): their
    // registry digest is the plan's, asked once.
    let resolved_by_plan: Vec<bool> = {
        let state = session.state.locked();
        session
            .pinned
            .iter()
            .map(|p| p.mode != PinMode::Lock && p.needs_resolution(&state))
            .collect()
    };
    let (plan, _) = puller
        .plan_with(&session.pinned, !offline)
        .await
        .map_err(Error::Engine)?;
    let mut rows = Vec::with_capacity(plan.len());
    for (d, by_plan) in plan.into_iter().zip(resolved_by_plan) {
        rows.push(row(session.registry.as_ref(), d, by_plan, offline).await);
    }
    let windows = report::Windows::of(&session.config, chrono::Utc::now());
    print(&if json {
        report::status_json(&session.config.source, &rows, &windows)
    } else {
        report::status_text(&rows) + &windows.text()
    });
    // A present image whose registry refuses it, or no longer has it, is failing too: its
    // refreshes will.
    let broken = rows
        .iter()
        .any(|r| report::needs_fixing(r.registry_error_class));
    let decisions: Vec<Decision> = rows.into_iter().map(|r| r.decision).collect();
    if exit_code && (broken || !report::PlanSummary::of(&decisions).settled()) {
        return Err(Error::Reported);
    }
    Ok(())
}

/// One image's row: the plan's decision, and the registry's digest for its tag.
async fn row(registry: &dyn Registry, d: Decision, by_plan: bool, offline: bool) -> StatusRow {
    let image = &d.pinned.image;
    let (registry_digest, failure) = if offline {
        (None, None)
    } else if by_plan {
        (d.digest.clone(), d.failure.clone())
    } else {
        // Ask about the tag, never the pinned digest: the question is whether it moved.
        match image.reference.by_tag() {
            Some(tag) => match registry.resolve(&tag, image.platform.as_deref()).await {
                Ok(r) => (Some(r.digest), None),
                Err(f) => (None, Some(f)),
            },
            None => (None, None),
        }
    };
    let registry_has_pinned = if offline {
        None
    } else {
        has_pinned(registry, &d, registry_digest.as_deref()).await
    };
    StatusRow {
        resolved_now: by_plan,
        registry_has_pinned,
        registry_error: failure.as_ref().map(|f| explain_for(image, f)),
        registry_error_class: failure.map(|f| f.class),
        registry_digest,
        decision: d,
    }
}

/// Whether the registry still has the digest a pull of `d` needs: asked (one HEAD) only when
/// the next run must pull a digest the config or the lock names, and the registry answered
/// that the tag now points elsewhere. A lock whose digest was deleted from the registry fails every run until it is
/// pinned again; the operator should learn that here, not from the next run.
async fn has_pinned(
    registry: &dyn Registry,
    d: &Decision,
    tag_digest: Option<&str>,
) -> Option<bool> {
    let digest = d.digest.as_deref()?;
    // A registry that did not answer about the tag says so already.
    let tag_digest = tag_digest?;
    let pinned_by_file = matches!(d.pinned.mode, PinMode::Lock | PinMode::Fixed);
    if d.action != Action::Pull || !pinned_by_file || tag_digest == digest {
        return None;
    }
    let reference = &d.pinned.image.reference;
    let by_digest: ImageRef = format!("{}@{digest}", reference.name()).parse().ok()?;
    registry.serves(&by_digest).await.ok()
}

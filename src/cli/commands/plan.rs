//! `stowage plan`: what `pull` would do now, and what a prune cycle would remove, changing
//! nothing.

use std::path::Path;

use super::{connect_to_show, print};
use crate::cli::error::Error;
use crate::cli::report;
use crate::io::engine::Store;
use crate::model::image::LocalImage;
use crate::service::in_flight::InFlight;
use crate::service::puller::PinUpkeep;
use crate::service::shutdown::Shutdown;

/// Prints the plan, as a table or (`json`) a document; with `exit_code`, fails (1) unless
/// every image is as declared.
pub(crate) async fn plan(
    config: &Path,
    host: Option<&str>,
    json: bool,
    exit_code: bool,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (engine, session) = connect_to_show(config, host, shutdown).await?;
    let puller = session.puller(
        &engine,
        Shutdown::new(),
        InFlight::default(),
        PinUpkeep::Command,
    );
    // The prune side, when the config has rules: what a cycle would remove and why. One
    // listing of the store serves both sides.
    let (plan, prune) = match &session.config.prune {
        Some(settings) => {
            let store = engine.store().await.map_err(Error::Engine)?;
            let local = store.iter().map(LocalImage::from).collect();
            let (plan, _) = puller.plan_over(&session.pinned, local, true).await;
            let pruner = session.pruner(&engine, settings, InFlight::default(), Shutdown::new());
            let prune = pruner.plan_over(store).await.map_err(Error::Engine)?.0;
            (plan, Some(prune))
        }
        None => (
            puller.plan(&session.pinned).await.map_err(Error::Engine)?.0,
            None,
        ),
    };
    let now = chrono::Utc::now();
    let windows = report::Windows::of(&session.config, now);
    if json {
        print(&report::plan_json(
            &session.config.source,
            &plan,
            prune.as_ref(),
            &windows,
        ));
    } else {
        let mut text = report::plan_text(&plan);
        if let Some(p) = &prune {
            text.push_str("\nPrune (one cycle now):\n");
            text.push_str(&report::prune_text(p, None, now.timestamp()));
        }
        let windows = windows.text();
        if !windows.is_empty() {
            text.push('\n');
            text.push_str(&windows);
        }
        print(&text);
    }
    if exit_code && !report::PlanSummary::of(&plan).settled() {
        return Err(Error::Reported);
    }
    Ok(())
}

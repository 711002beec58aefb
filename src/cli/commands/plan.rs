//! `stowage plan`: what `pull` would do now, and what a prune cycle would remove, changing
//! nothing.

use std::path::Path;

use super::{connect, print};
use crate::cli::error::Error;
use crate::cli::report;
use crate::service::in_flight::InFlight;
use crate::service::puller::PinUpkeep;
use crate::service::shutdown::Shutdown;

/// Prints the plan, as a table or (`json`) a document.
pub(crate) async fn plan(
    config: &Path,
    host: Option<&str>,
    json: bool,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (engine, session) = connect(config, host, shutdown).await?;
    let puller = session.puller(
        &engine,
        Shutdown::new(),
        InFlight::default(),
        PinUpkeep::Command,
    );
    let (plan, _) = puller.plan(&session.pinned).await.map_err(Error::Engine)?;
    // The prune side, when the config has rules: what a cycle would remove and why.
    let prune = match &session.config.prune {
        Some(settings) => {
            let pruner = session.pruner(&engine, settings, InFlight::default(), Shutdown::new());
            Some(pruner.plan().await.map_err(Error::Engine)?.0)
        }
        None => None,
    };
    if json {
        print(&report::plan_json(
            &session.config.source,
            &plan,
            prune.as_ref(),
        ));
    } else {
        let mut text = report::plan_text(&plan);
        if let Some(p) = &prune {
            text.push_str("\nPrune (one cycle now):\n");
            text.push_str(&report::prune_text(p, &[], chrono::Utc::now().timestamp()));
        }
        print(&text);
    }
    Ok(())
}

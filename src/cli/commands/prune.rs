//! `stowage prune`: one prune cycle now, by the `[prune]` rules.

use std::path::Path;

use super::{connect, print};
use crate::cli::error::Error;
use crate::cli::report;
use crate::policy::config::PruneSettings;
use crate::service::in_flight::InFlight;
use crate::service::pruner::{Race, RemovalResult};
use crate::service::shutdown::Shutdown;

/// Runs one cycle (or, with `dry_run`, only plans it) and reports what goes, what stays and
/// why: 1 when a removal failed.
pub(crate) async fn prune(
    config: &Path,
    host: Option<&str>,
    dry_run: bool,
    json: bool,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (engine, session) = connect(config, host, shutdown).await?;
    // No [prune] table: the defaults (dangling images only, after an hour).
    let defaults = PruneSettings::default();
    let settings = session.config.prune.as_ref().unwrap_or(&defaults);
    let pruner = session.pruner(&engine, settings, InFlight::default(), Shutdown::new());
    pruner.warn_if_build_cache_ignored();
    let cycle = pruner.cycle(dry_run).await.map_err(Error::Engine)?;
    let images_lost = cycle.images_lost();
    let (plan, removals) = (&cycle.plan, &cycle.removals);
    if json {
        print(&report::prune_doc(&session.config.source, dry_run, &cycle));
    } else {
        let now = chrono::Utc::now().timestamp();
        if session.config.prune.is_none() {
            // The rules in force are not the operator's: say which they are.
            let age = defaults.limits.dangling_min_age.unwrap_or(0);
            print(&report::paragraph(&format!(
                "no [prune] table in the config: by the defaults, only dangling (untagged) \
                 images older than {} go",
                humantime::format_duration(std::time::Duration::from_secs(
                    u64::try_from(age).unwrap_or(0)
                ))
            )));
            print("\n");
        }
        let done = (!dry_run).then_some(removals.as_slice());
        print(&report::prune_text(plan, done, now));
        print(&report::late_race_notes(&cycle.late_races));
        print(&report::still_lost_notes(&cycle.still_lost));
    }
    // A removal that failed, or anything lost on the way (taken against the plan, or by a
    // container's race, now or before, and not put back), is a failed prune: a cron'd prune
    // keeps failing while a container's image is missing.
    let taken_lost = |r: &crate::service::pruner::Removal| {
        r.against_plan
            .iter()
            .any(|a| matches!(a.outcome, Race::Lost { .. }))
    };
    if images_lost > 0
        || removals
            .iter()
            .any(|r| r.result == RemovalResult::Failed || taken_lost(r))
    {
        Err(Error::Reported)
    } else {
        Ok(())
    }
}

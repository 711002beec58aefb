//! `stowage pull`: pull what is required once, and report.

use std::path::Path;

use super::{connect, print};
use crate::cli::error::Error;
use crate::cli::report;
use crate::decide::outcome::Summary;
use crate::service::in_flight::InFlight;
use crate::service::puller::PinUpkeep;
use crate::service::shutdown::Shutdown;

/// Pulls once: 0 all present, 1 any failed. A `shutdown` lets pulls under way finish within
/// `pull.shutdown_grace`, and starts no new one.
pub(crate) async fn pull(
    config: &Path,
    host: Option<&str>,
    json: bool,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (engine, session) = connect(config, host, shutdown).await?;
    let stop = shutdown.child();
    let in_flight = InFlight::default();
    let puller = session.puller(&engine, stop.clone(), in_flight.clone(), PinUpkeep::Command);
    let work = puller.converge(&session.pinned);
    tokio::pin!(work);
    let result = match shutdown.until(&mut work).await {
        Some(r) => r,
        None => {
            tracing::info!("stopping: no new pulls start; waiting for in-flight pulls");
            let grace = session.config.pull.shutdown_grace;
            stop.drain(grace, work).await.ok_or_else(|| {
                let pending = in_flight.snapshot();
                Error::Failed(if pending.is_empty() {
                    "stopped before the pulls finished".to_owned()
                } else {
                    format!(
                        "stopped: abandoned in-flight pulls of {}",
                        pending.join(", ")
                    )
                })
            })?
        }
    };
    let outcomes = result.map_err(Error::Engine)?;
    print(&if json {
        report::pull_json(&session.config.source, &outcomes)
    } else {
        report::pull_text(&outcomes)
    });
    if Summary::of(&outcomes).all_ok() {
        Ok(())
    } else {
        Err(Error::Reported)
    }
}

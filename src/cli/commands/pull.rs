//! `stowage pull`: pull what is required once, and report.

use std::path::Path;

use super::{connect, print};
use crate::cli::error::Error;
use crate::cli::progress::PullBar;
use crate::cli::report;
use crate::decide::outcome::{Outcome, Summary};
use crate::io::engine::docker::DockerEngine;
use crate::service::in_flight::InFlight;
use crate::service::progress::{Progress, Unfollowed};
use crate::service::puller::PinUpkeep;
use crate::service::puller::Puller;
use crate::service::session::Session;
use crate::service::shutdown::Shutdown;

/// Pulls once: 0 all present, 1 any failed. A `shutdown` lets pulls under way finish within
/// `pull.shutdown_grace`, and starts no new one. With `bar`, a progress bar shows meanwhile.
pub(crate) async fn pull(
    config: &Path,
    host: Option<&str>,
    json: bool,
    bar: bool,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (engine, session) = connect(config, host, shutdown).await?;
    let stop = shutdown.child();
    let in_flight = InFlight::default();
    let bar = bar.then(PullBar::show);
    let unfollowed = Unfollowed;
    let progress: &dyn Progress = match &bar {
        Some(bar) => bar,
        None => &unfollowed,
    };
    let puller = session
        .puller(&engine, stop.clone(), in_flight.clone(), PinUpkeep::Command)
        .followed_by(progress);
    let result = converge(&session, &puller, &stop, &in_flight, shutdown).await;
    let save_failure = puller.save_failure();
    if let Some(bar) = bar {
        bar.finish();
    }
    let outcomes = result?;
    print(&if json {
        report::pull_json(&session.config.source, &outcomes)
    } else {
        report::pull_text(&outcomes)
    });
    if !Summary::of(&outcomes).all_ok() {
        return Err(Error::Reported);
    }
    // The images are there, but what pins them was not saved: the next run resolves the
    // first-pull tags again, and may pull other content.
    if let Some(why) = save_failure {
        return Err(Error::Failed(format!(
            "the images are present, but the state file {} could not be written: {why}",
            session.config.state_file.display()
        )));
    }
    Ok(())
}

/// The run, drained within `pull.shutdown_grace` on a shutdown.
async fn converge(
    session: &Session,
    puller: &Puller<'_, DockerEngine>,
    stop: &Shutdown,
    in_flight: &InFlight,
    shutdown: &Shutdown,
) -> Result<Vec<Outcome>, Error> {
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
    result.map_err(Error::Engine)
}

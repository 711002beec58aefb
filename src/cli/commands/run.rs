//! `stowage run`: the daemon.

use std::path::Path;

use crate::cli::error::Error;
use crate::service::daemon;
use crate::service::session::load;
use crate::service::shutdown::Shutdown;

/// Runs the daemon on the config at `path` until `shutdown`.
pub(crate) async fn run(path: &Path, host: Option<&str>, shutdown: &Shutdown) -> Result<(), Error> {
    let loaded = load(path)?;
    daemon::start(loaded, host, shutdown).await?;
    Ok(())
}

//! One function per command. Each returns `Ok(())` or the [`Error`] that the boundary in
//! [`super::dispatch`] turns into a message and an exit code.

pub(super) mod check;
pub(super) mod generate;
pub(super) mod health;
pub(super) mod pin;
pub(super) mod plan;
pub(super) mod prune;
pub(super) mod pull;
pub(super) mod run;
pub(super) mod status;

use std::io::Write;
use std::path::Path;

use super::error::Error;
use crate::io::engine::docker::DockerEngine;
use crate::service::pruner::{OwnImageError, own_image};
use crate::service::session::{Loaded, Session, load};
use crate::service::shutdown::Shutdown;

/// What `plan`, `pull`, `prune` and `status` start from: the config loaded, one attempt to
/// reach the engine (interruptible like the rest), and a session over both.
async fn connect(
    config: &Path,
    host: Option<&str>,
    shutdown: &Shutdown,
) -> Result<(DockerEngine, Session), Error> {
    let Loaded { config, lock } = load(config)?;
    let engine = shutdown
        .until(DockerEngine::connect(host))
        .await
        .ok_or_else(|| Error::Failed("stopped before the engine answered".into()))??;
    let session = Session::new(config, lock, &engine).await?;
    // A STOWAGE_OWN_IMAGE_ID that protects nothing stops every command, not only a prune.
    match own_image(&engine).await {
        Ok(_) => Ok((engine, session)),
        Err(OwnImageError::Invalid(why)) => Err(Error::Usage(why)),
        Err(OwnImageError::Engine(f)) => Err(Error::Engine(f)),
    }
}

/// [`connect`] for a command that only shows (`plan`, `status`): it asks each registry once,
/// since a retry with backoff would keep the operator waiting for an answer the failure
/// already gives.
async fn connect_to_show(
    config: &Path,
    host: Option<&str>,
    shutdown: &Shutdown,
) -> Result<(DockerEngine, Session), Error> {
    let (engine, mut session) = connect(config, host, shutdown).await?;
    session.config.pull.retry.retries = 0;
    Ok((engine, session))
}

/// Writes command output; a closed pipe (`stowage plan | head`) is not an error worth a panic.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

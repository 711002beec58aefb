//! `stowage pin`: resolve every lockable tag to its digest and write the lock file.

use std::path::Path;

use super::print;
use crate::cli::error::Error;
use crate::cli::report;
use crate::decide::pin::is_lockable;
use crate::io::credentials::CredentialSource;
use crate::io::registry::Resolver;
use crate::model::failure::explain;
use crate::policy::config::{Config, ConfigError};
use crate::policy::lockfile::{LockFile, LockKey};
use crate::policy::state::State;

/// `stowage pin`: resolve every lockable image and write (or check) the lock. Needs no engine:
/// a lock entry holds every platform of an index, so it can be made anywhere, CI included.
pub(crate) async fn pin(path: &Path, check: bool) -> Result<(), Error> {
    let config = Config::load(path)?;
    let old =
        LockFile::load(&config.lock_file).map_err(|problems| ConfigError::Invalid { problems })?;
    let credentials = CredentialSource::new(config.pull.credentials.as_deref());
    // What the state file and the old lock know about indexes: not fetched again. The
    // platform only matters for `resolve`, which pin does not use.
    let known = State::load(&config.state_file).index_platforms;
    let resolver = Resolver::knowing(&config, credentials, String::new(), known, old.as_ref());
    let mut new = LockFile::default();
    let mut failed = false;
    for image in config.images.iter().filter(|i| is_lockable(i)) {
        match resolver.resolve_entry(&image.reference).await {
            Ok(entry) => {
                new.entries.insert(
                    LockKey::new(&image.reference, image.platform.as_deref()),
                    entry,
                );
            }
            Err(f) => {
                eprintln!("stowage: {}", explain(&image.reference, &f));
                failed = true;
            }
        }
    }
    if failed {
        // Nothing changes on error: a half-resolved lock would unpin the images that failed.
        return Err(Error::Failed(format!(
            "{} not written: some images could not be resolved",
            config.lock_file.display()
        )));
    }
    let changes = old.clone().unwrap_or_default().changes_to(&new);
    let stale = old.is_none() || !changes.is_empty();
    print(&report::lock_changes_text(
        &config.lock_file,
        &changes,
        check,
    ));
    if check {
        if old.is_none() {
            return Err(Error::Failed(format!(
                "{}: no lock file",
                config.lock_file.display()
            )));
        }
        return if stale { Err(Error::Reported) } else { Ok(()) };
    }
    if stale && let Err(e) = new.write(&config.lock_file) {
        return Err(Error::Failed(format!(
            "{}: cannot write the lock file: {e}",
            config.lock_file.display()
        )));
    }
    Ok(())
}

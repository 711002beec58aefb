//! `stowage pin`: resolve every lockable tag to its digest and write the lock file.

use std::path::Path;
use std::sync::Mutex;

use super::print;
use crate::cli::error::Error;
use crate::cli::report;
use crate::decide::pin::is_lockable;
use crate::io::credentials::CredentialSource;
use crate::io::registry::Resolver;
use crate::model::failure::{Failure, explain};
use crate::model::signature::Check;
use crate::policy::config::{Config, ConfigError, RequiredImage};
use crate::policy::lockfile::{LockEntry, LockFile, LockKey};
use crate::policy::state::State;
use crate::service::verify::Verifier;

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
    // Checks are kept in memory: `pin` may run where no state file is (CI).
    let state = Mutex::new(State::default());
    let found = Mutex::default();
    let verifier = Verifier {
        registry: &resolver,
        config: &config,
        state: &state,
        found: &found,
    };
    let mut new = LockFile::default();
    let mut failed = false;
    for image in config.images.iter().filter(|i| is_lockable(i)) {
        match lock_entry(&resolver, &verifier, image).await {
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
        // Nothing changes on error: a half-resolved lock would unpin the images that failed,
        // and an unverified one would pin what the policy refuses.
        return Err(Error::Failed(format!(
            "{} {}: some images could not be resolved or verified",
            config.lock_file.display(),
            if check {
                "does not hold"
            } else {
                "not written"
            }
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

/// What the lock records for `image`: the digest its tag names now and, under a signature
/// policy, the key that signed it. A digest the policy refuses is an error: it is never locked.
async fn lock_entry(
    resolver: &Resolver,
    verifier: &Verifier<'_>,
    image: &RequiredImage,
) -> Result<LockEntry, Failure> {
    let mut entry = resolver.resolve_entry(&image.reference).await?;
    let check = verifier.verify(image, &entry.digest, None).await?;
    if let Some(refused) = check
        .as_ref()
        .and_then(|c| Verifier::refusal(image, &entry.digest, c))
    {
        return Err(refused);
    }
    // A warning (mode = "warn") was logged by the check: locked without `signed_by`.
    if let Some(Check::Verified { key, .. }) = check {
        entry.signed_by = Some(key);
    }
    Ok(entry)
}

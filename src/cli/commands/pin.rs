//! `stowage pin`: resolve every lockable tag to its digest and write the lock file.

use std::path::Path;
use std::sync::Mutex;

use super::print;
use crate::cli::error::Error;
use crate::cli::logging;
use crate::cli::report::{self, PinFailure, PinResult};
use crate::decide::pin::is_lockable;
use crate::decide::pull_plan::explain_for;
use crate::io::credentials::CredentialSource;
use crate::io::registry::Resolver;
use crate::model::failure::Failure;
use crate::model::signature::Check;
use crate::policy::config::{Config, ConfigError, RequiredImage};
use crate::policy::lockfile::{LockEntry, LockFile, LockKey};
use crate::policy::state::State;
use crate::service::verify::Verifier;

/// `stowage pin`: resolve every lockable image and write (or check) the lock. Needs no engine:
/// a lock entry holds every platform of an index, so it can be made anywhere, CI included.
/// With `json`, one document on standard output says what it came to.
pub(crate) async fn pin(path: &Path, check: bool, json: bool) -> Result<(), Error> {
    let config = Config::load(path)?;
    let old =
        LockFile::load(&config.lock_file).map_err(|problems| ConfigError::Invalid { problems })?;
    let credentials = CredentialSource::new(config.pull.credentials.as_deref());
    // What the state file and the old lock know about indexes: not fetched again. The
    // platform only matters for `resolve`, which pin does not use.
    let known = State::load(&config.state_file).index_platforms;
    // No engine here: loopback registries are taken as plain HTTP, as Docker does by default.
    let resolver = Resolver::knowing(
        &config,
        credentials,
        String::new(),
        known,
        old.as_ref(),
        None,
    );
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
    let mut failures = Vec::new();
    for image in config.images.iter().filter(|i| is_lockable(i)) {
        let key = LockKey::new(&image.reference, image.platform.as_deref());
        match lock_entry(&resolver, &verifier, image).await {
            Ok(entry) => {
                new.entries.insert(key, entry);
            }
            Err(f) => {
                let message = explain_for(image, &f);
                if !json {
                    let at = [
                        ("image", key.to_string().into()),
                        ("class", f.class.as_str().into()),
                    ];
                    logging::final_error(&message, &at);
                }
                failures.push(PinFailure {
                    image: key.to_string(),
                    class: f.class,
                    message,
                    detail: f.detail,
                });
            }
        }
    }
    let changes = old.clone().unwrap_or_default().changes_to(&new);
    let result = if !failures.is_empty() {
        PinResult::Failed
    } else if old.is_some() && changes.is_empty() {
        PinResult::UpToDate
    } else if check {
        PinResult::Stale
    } else {
        PinResult::Written
    };
    if result == PinResult::Written
        && let Err(e) = new.write(&config.lock_file)
    {
        return Err(Error::Failed(format!(
            "{}: cannot write the lock file: {e}",
            config.lock_file.display()
        )));
    }
    let lock_file = &config.lock_file;
    if json {
        // Nothing changes on a failure: a half-resolved lock would unpin the images that
        // failed, and an unverified one would pin what the policy refuses.
        let changes = if result == PinResult::Failed {
            &[][..]
        } else {
            &changes[..]
        };
        print(&report::pin_json(
            lock_file, check, result, changes, &failures,
        ));
        return match result {
            PinResult::UpToDate | PinResult::Written => Ok(()),
            PinResult::Stale | PinResult::Failed => Err(Error::Reported),
        };
    }
    match result {
        PinResult::Failed => Err(Error::Failed(format!(
            "{} {}: some images could not be resolved or verified",
            lock_file.display(),
            if check {
                "cannot be checked"
            } else {
                "not written"
            }
        ))),
        _ => {
            print(&report::lock_changes_text(lock_file, &changes, check));
            match result {
                PinResult::Stale if old.is_none() => Err(Error::Failed(format!(
                    "{}: no lock file",
                    lock_file.display()
                ))),
                PinResult::Stale => Err(Error::Reported),
                _ => Ok(()),
            }
        }
    }
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
        return Err(Failure {
            detail: format!("{}; it is not locked", refused.detail),
            ..refused
        });
    }
    // A warning (mode = "warn") was logged by the check: locked without `signed_by`.
    if let Some(Check::Verified { signer, .. }) = check {
        entry.signed_by = Some(signer.to_string());
    }
    Ok(entry)
}

//! `stowage check`: validate the configuration and its lock, and say what they hold.

use std::path::Path;

use super::print;
use crate::cli::error::Error;
use crate::cli::report;
use crate::service::session::{Loaded, load};

/// Validates the config at `path` and the lock it names: 0 valid, 2 invalid (every problem
/// listed, with its location). With `json`, one document on standard output either way.
pub(crate) fn check(path: &Path, json: bool) -> Result<(), Error> {
    let loaded = load(path);
    if json {
        print(&report::check_json(path, &loaded));
        return match loaded {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::ConfigReported),
        };
    }
    let Loaded { config, lock } = loaded?;
    let images = config.images.len();
    let lock = match lock {
        Some(l) => format!(
            "lock file {} with {}",
            config.lock_file.display(),
            report::count(l.entries.len(), "entry", "entries")
        ),
        None => "no lock file".to_owned(),
    };
    print(&format!(
        "{}: valid ({}; {lock})\n",
        path.display(),
        report::count(images, "image", "images"),
    ));
    Ok(())
}

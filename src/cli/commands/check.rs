//! `stowage check`: validate the configuration and its lock, and say what they hold.

use std::path::Path;

use super::print;
use crate::cli::error::Error;
use crate::service::session::{Loaded, load};

/// Validates the config at `path` and the lock it names: 0 valid, 2 invalid (every problem
/// listed, with its location).
pub(crate) fn check(path: &Path) -> Result<(), Error> {
    let Loaded { config, lock } = load(path)?;
    let images = config.images.len();
    let lock = match lock {
        Some(l) => format!(
            "lock file {} with {} entries",
            config.lock_file.display(),
            l.entries.len()
        ),
        None => "no lock file".to_owned(),
    };
    print(&format!(
        "{}: valid ({images} image{}; {lock})\n",
        path.display(),
        if images == 1 { "" } else { "s" },
    ));
    Ok(())
}

//! `stowage generate DIR` (hidden): the man page and the shell completions, generated from the
//! command-line definition itself so they never fall behind it. `scripts/package.sh` runs it,
//! and both packages install what it writes.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::cli::error::Error;

/// Writes `stowage.1`, and the completions for bash (`stowage.bash`), zsh (`_stowage`) and
/// fish (`stowage.fish`), into `dir` (created if missing).
pub(crate) fn generate(dir: &Path) -> Result<(), Error> {
    let failed = |what: &str, e: std::io::Error| {
        Error::Failed(format!("cannot write {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed("the directory", e))?;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| failed("the man page", e))?;
    std::fs::write(dir.join("stowage.1"), page).map_err(|e| failed("stowage.1", e))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "stowage", dir)
            .map_err(|e| failed(&format!("the {shell} completions"), e))?;
    }
    Ok(())
}

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
    let page = man_page().map_err(|e| failed("the man page", e))?;
    std::fs::write(dir.join("stowage.1"), page).map_err(|e| failed("stowage.1", e))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "stowage", dir)
            .map_err(|e| failed(&format!("the {shell} completions"), e))?;
    }
    Ok(())
}

/// The one man page: clap's sections for the global options, then every command with its own
/// options in it (no `stowage-run(1)` pages to point at, which nothing would install), then
/// what a man page reader looks for last.
pub(crate) fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    // NAME as man pages write it (lower case, no full stop); DESCRIPTION the crate's sentence.
    let described = cmd
        .clone()
        .about("keep a host's container images as declared: pre-pull, pin and prune")
        .long_about(env!("CARGO_PKG_DESCRIPTION"));
    let man = clap_mangen::Man::new(described);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend(commands_section(&cmd).as_bytes());
    page.extend(closing_sections().as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// COMMANDS: each visible subcommand, its summary, its own options and its exit codes.
fn commands_section(cmd: &clap::Command) -> String {
    use roff::{Roff, bold, italic, roman};
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let own: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_long().is_some())
            .collect();
        let mut usage = vec![bold(format!("stowage {}", sub.get_name()))];
        for arg in &own {
            usage.push(roman(format!(
                " [--{}]",
                arg.get_long().unwrap_or_default()
            )));
        }
        roff.control("TP", []);
        roff.text(usage);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
        for arg in &own {
            roff.control("RS", []);
            roff.control("TP", []);
            roff.text([bold(format!("--{}", arg.get_long().unwrap_or_default()))]);
            roff.text([roman(
                arg.get_help().map(ToString::to_string).unwrap_or_default(),
            )]);
            roff.control("RE", []);
        }
        if let Some(after) = sub.get_after_help() {
            roff.control("RS", []);
            roff.control("PP", []);
            roff.text([italic(after.to_string())]);
            roff.control("RE", []);
        }
    }
    roff.to_roff()
}

/// EXIT STATUS, ENVIRONMENT, FILES and EXAMPLES.
fn closing_sections() -> String {
    use roff::{Roff, bold, roman};
    let mut roff = Roff::new();
    let mut section = |title: &str, entries: &[(&str, &str)]| {
        roff.control("SH", [title]);
        for (term, text) in entries {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*text)]);
        }
    };
    section(
        "EXIT STATUS",
        &[
            (
                "0",
                "Success: the command did what it says (pull: every required image is present).",
            ),
            (
                "1",
                "The work failed: an image could not be pulled, a removal failed, the engine \
                 could not be reached, the lock is stale (pin --check), or, with --exit-code, \
                 an image is missing, drifted or failing.",
            ),
            (
                "2",
                "The configuration, its lock file or the command line is wrong; every problem \
                 is listed as PATH:LINE:COLUMN: message. Nothing was changed.",
            ),
        ],
    );
    section(
        "ENVIRONMENT",
        &[
            ("STOWAGE_CONFIG", "The configuration file (--config)."),
            (
                "DOCKER_HOST",
                "The engine's address (--docker-host); else unix:///var/run/docker.sock.",
            ),
            (
                "STOWAGE_LOG",
                "The log filter (--log-level): error, warn, info, debug, trace, or tracing directives.",
            ),
            (
                "STOWAGE_THREADS",
                "Worker threads of the async runtime (--threads).",
            ),
            (
                "DOCKER_CONFIG",
                "The directory of the config.json with registry logins, when pull.credentials \
                 is not set; else ~/.docker of the user stowage runs as.",
            ),
            (
                "STOWAGE_OWN_IMAGE_ID",
                "The image stowage itself runs from, when it runs in a container: never pruned.",
            ),
        ],
    );
    section(
        "FILES",
        &[
            (
                "/etc/stowage/config.toml",
                "The configuration: required images, pull, prune and metrics settings.",
            ),
            (
                "/etc/stowage/stowage.lock",
                "The lock file (pin.lock_file, beside the configuration): one digest per image, \
                 written by stowage pin and shipped with the configuration.",
            ),
            (
                "/var/lib/stowage/state.json",
                "What stowage remembers between runs: first-pull pins, image first-seen and \
                 last-use times, verified signatures.",
            ),
            (
                "/usr/share/doc/stowage/config.example.toml",
                "Every configuration key, documented.",
            ),
        ],
    );
    section(
        "EXAMPLES",
        &[
            (
                "stowage check --config /etc/stowage/config.toml",
                "Validate a configuration (as Ansible's validate: does).",
            ),
            (
                "stowage plan",
                "What a pull would do now, and why; changes nothing.",
            ),
            (
                "sudo -u stowage -H stowage status --exit-code",
                "Each required image as the daemon sees it; exit 1 unless all are as declared.",
            ),
            (
                "stowage pin --check || stowage pin",
                "In CI: exit 1 when the lock is stale; then write it afresh (and commit it).",
            ),
            (
                "stowage prune --dry-run",
                "What a prune cycle would remove now, and what it keeps and why.",
            ),
            (
                "systemctl reload stowage",
                "Apply an edited configuration to the running daemon.",
            ),
        ],
    );
    roff.to_roff()
}

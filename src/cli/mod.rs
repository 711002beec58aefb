//! The command line: arguments, one function per command (in [`commands`]), report rendering
//! ([`report`]), and the one place an error becomes an exit code ([`error`]).

mod commands;
pub(crate) mod error;
mod logging;
mod progress;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::policy::config::DEFAULT_CONFIG_PATH;
use crate::service::shutdown::Shutdown;
use error::{EXIT_FAILURE, EXIT_USAGE};
use logging::LogFormat;

/// The version and the commit it was built from (see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STOWAGE_COMMIT"), ")");

/// The heading of the options every command takes: under each command's own in its `--help`.
const GLOBAL: &str = "Global options";

/// Keeps this host's container images the way the configuration declares: pre-pulls required
/// images at boot and on a schedule, pinned to digests.
#[derive(Debug, Parser)]
#[command(name = "stowage", version = VERSION, about, long_about = None, max_term_width = 80)]
pub(crate) struct Cli {
    /// Configuration file.
    // `hide_env_values`: the variable's name, not `[env: STOWAGE_CONFIG=]` when it is unset.
    #[arg(long, short = 'c', global = true, env = "STOWAGE_CONFIG", hide_env_values = true,
          value_name = "PATH", default_value = DEFAULT_CONFIG_PATH, help_heading = GLOBAL)]
    pub config: PathBuf,

    /// Docker engine address (unix:///path/docker.sock, tcp://host:port, or host:port), for
    /// the commands that ask the engine (not `check` or `pin`).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "DOCKER_HOST",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub docker_host: Option<String>,

    /// Log format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Auto,
          help_heading = GLOBAL)]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "STOWAGE_LOG",
        hide_env_values = true,
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,

    /// Worker threads of the async runtime. One is enough for a daemon that mostly sleeps and
    /// waits on the engine and registries (measured: as fast to start as two, and no more
    /// memory); more only help when several pulls' progress streams keep one thread busy.
    #[arg(long, global = true, env = "STOWAGE_THREADS", hide_env_values = true, help_heading = GLOBAL,
          default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes of `plan` and `status`, under their `--help` (and in the man page).
const EXIT_CODE_HELP: &str = "Exit status: 0 shown (with --exit-code: and every image is as \
declared); 1 the engine could not be asked (with --exit-code: or an image is missing, drifted \
or failing); 2 the configuration or the command line is wrong.";
/// The exit codes of `run`.
const RUN_EXIT_HELP: &str = "Exit status: 0 stopped by SIGTERM or SIGINT; 1 the metrics \
address cannot be bound; 2 the configuration or the command line is wrong. An engine that is \
not up is waited for, and a failed reload keeps the running configuration.";
/// The exit codes of `check`.
const CHECK_EXIT_HELP: &str = "Exit status: 0 valid; 2 invalid, every problem of the config \
and its lock listed as PATH:LINE:COLUMN: message (with --json, in the document).";
/// The exit codes of `pull`.
const PULL_EXIT_HELP: &str = "Exit status: 0 every image present as declared; 1 an image \
failed, the engine could not be reached, or the state file could not be saved; 2 the \
configuration or the command line is wrong.";
/// The exit codes of `prune`.
const PRUNE_EXIT_HELP: &str = "Exit status: 0 done (an image kept because the store changed \
under the cycle included); 1 a removal failed, something was removed that could not be put \
back, or the engine could not be reached; 2 the configuration or the command line is wrong.";
/// The exit codes of `pin`.
const PIN_EXIT_HELP: &str = "Exit status: 0 the lock is written or up to date; 1 it is stale \
(--check), an image could not be resolved or verified (nothing is written), or it cannot be \
written; 2 the configuration or the command line is wrong.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: pull what is required at boot, then on the schedule, until SIGTERM/SIGINT.
    #[command(after_help = RUN_EXIT_HELP)]
    Run,
    /// Validate the configuration and its lock file, listing every problem.
    #[command(after_help = CHECK_EXIT_HELP)]
    Check {
        /// Print JSON instead of text: valid or not, and every problem, located.
        #[arg(long)]
        json: bool,
    },
    /// Show what `pull` would do now, changing nothing.
    #[command(after_help = EXIT_CODE_HELP)]
    Plan {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit 1 when anything is to be pulled or tagged, or cannot be (as `git diff
        /// --exit-code`); 0 when every image is as declared.
        #[arg(long)]
        exit_code: bool,
    },
    /// Pull what is required once, report each image, and exit.
    #[command(after_help = PULL_EXIT_HELP)]
    Pull {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One prune cycle now, by the `[prune]` rules: what goes, what stays and why.
    #[command(after_help = PRUNE_EXIT_HELP)]
    Prune {
        /// Change nothing: show what would be removed and why.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resolve every lockable tag to its digest and write the lock file (atomically).
    #[command(after_help = PIN_EXIT_HELP)]
    Pin {
        /// Change nothing; exit 1 if the lock file is missing or stale (for CI).
        #[arg(long)]
        check: bool,
        /// Print JSON instead of text: the changes, and the images that failed.
        #[arg(long)]
        json: bool,
    },
    /// Show each required image: pin, presence, pinned, local and registry digests, drift.
    #[command(after_help = EXIT_CODE_HELP)]
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit 1 when any image is missing, drifted or failing (as `git diff --exit-code`); 0
        /// when every image is as declared.
        #[arg(long)]
        exit_code: bool,
        /// Do not ask registries for their current digests.
        #[arg(long)]
        offline: bool,
    },
    /// Ask the running daemon's /healthz (at the config's [metrics] listen): exit 0 when it
    /// is healthy, 1 when a loop is stuck or nothing answers. For container healthchecks.
    Health,
    /// Write the man page and the bash, zsh and fish completions into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// Where to write them.
        dir: PathBuf,
    },
}

impl Command {
    /// Whether the command stops on the shutdown signal (the rest are ended by it).
    fn stops_gracefully(&self) -> bool {
        !matches!(
            self,
            Command::Check { .. }
                | Command::Pin { .. }
                | Command::Generate { .. }
                | Command::Health
        )
    }
}

/// Parses the process arguments and runs; the binary's whole `main`.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // `--help` and `--version` are answers, on standard output, exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return ExitCode::from(logging::usage_error(&e, &args)),
    };
    if let Err(e) = logging::init(cli.log_format, &cli.log_level) {
        eprintln!("stowage: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cli.threads))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::final_error(&format!("cannot start the async runtime: {e}"), &[]);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async {
        let shutdown = Shutdown::new();
        // Only the commands that obey a stop catch SIGTERM and SIGINT: `check` and `pin` keep
        // the signals' default action, so Ctrl-C ends them at once (a handler, once installed,
        // would swallow every later signal too).
        if cli.command.stops_gracefully() {
            let signals = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                signals.trigger();
            });
        }
        dispatch(cli, &shutdown).await
    });
    // A credential helper stuck in a blocking thread must not keep the process alive past
    // the shutdown grace the operator configured.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// Runs one command to completion and returns its exit code. `shutdown` triggered asks a
/// running `run` or `pull` to stop.
pub(crate) async fn dispatch(cli: Cli, shutdown: &Shutdown) -> u8 {
    let config = cli.config.as_path();
    let host = cli.docker_host.as_deref();
    let result = match cli.command {
        Command::Run => commands::run::run(config, host, shutdown).await,
        Command::Check { json } => commands::check::check(config, json),
        Command::Plan { json, exit_code } => {
            commands::plan::plan(config, host, json, exit_code, shutdown).await
        }
        Command::Pull { json } => {
            let bar = logging::interactive();
            commands::pull::pull(config, host, json, bar, shutdown).await
        }
        Command::Prune { dry_run, json } => {
            commands::prune::prune(config, host, dry_run, json, shutdown).await
        }
        Command::Pin { check, json } => commands::pin::pin(config, check, json).await,
        Command::Status {
            json,
            exit_code,
            offline,
        } => commands::status::status(config, host, json, exit_code, offline, shutdown).await,
        Command::Generate { dir } => commands::generate::generate(&dir),
        Command::Health => commands::health::health(config).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            e.print();
            e.exit_code()
        }
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}; only SIGINT stops stowage");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
    }
}

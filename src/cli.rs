//! Command-line interface: arguments, dispatch and exit codes.
//!
//! Exit codes: 0 success; 1 the work failed (an image could not be pulled, the engine could not
//! be reached); 2 the configuration or the command line is wrong (clap's convention for usage
//! errors, and what Ansible's `validate:` expects from `check`).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::converge::{InFlight, Puller, Summary};
use crate::credentials::CredentialSource;
use crate::daemon;
use crate::engine::Engine;
use crate::engine::docker::{ConnectError, DockerEngine};
use crate::logging::{self, LogFormat};
use crate::plan::plan_pulls;
use crate::report;

/// Exit code: the work failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration or the command line is wrong.
pub const EXIT_USAGE: u8 = 2;

/// Keeps this host's container images the way the configuration declares: pre-pulls required
/// images at boot and on a schedule.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, env = "STOWAGE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Docker engine address (unix:///path/docker.sock, tcp://host:port).
    #[arg(long, global = true, env = "DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,

    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(
        long,
        global = true,
        env = "STOWAGE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: pull what is required at boot, then on the schedule, until SIGTERM/SIGINT.
    Run,
    /// Validate the configuration and exit: 0 valid, 2 invalid (every problem listed).
    Check,
    /// Show what `pull` would do now, changing nothing.
    Plan {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pull what is required once and exit: 0 all present, 1 any failed, 2 config error.
    Pull {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the process arguments and runs; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_format, &cli.log_level) {
        eprintln!("stowage: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stowage: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(dispatch(cli, shutdown_signal()));
    // A credential helper stuck in a blocking thread must not keep the process alive past
    // the shutdown grace the operator configured.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// Runs one command to completion and returns its exit code. `shutdown` completing asks a
/// running `run` or `pull` to stop.
pub async fn dispatch(cli: Cli, shutdown: impl Future<Output = ()>) -> u8 {
    if let Command::Check = cli.command {
        return check(&cli.config);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let host = cli.docker_host.as_deref();
    tokio::pin!(shutdown);
    if let Command::Run = cli.command {
        let stop = CancellationToken::new();
        let engine = tokio::select! {
            engine = daemon::connect_docker(host, &stop) => engine,
            () = &mut shutdown => Ok(None),
        };
        return match engine {
            Ok(Some(engine)) => {
                daemon::run(config, engine, shutdown).await;
                0
            }
            Ok(None) => 0,
            Err(e) => usage(&e.to_string()),
        };
    }
    // plan and pull: one attempt to reach the engine, interruptible like the rest.
    let engine = tokio::select! {
        engine = DockerEngine::connect(host) => engine,
        () = &mut shutdown => return fail("stopped before the engine answered"),
    };
    let engine = match engine {
        Ok(e) => e,
        Err(ConnectError::BadAddress(message)) => return usage(&message),
        Err(ConnectError::Unreachable(f)) => return fail(&format!("engine: {}", f.detail)),
    };
    match cli.command {
        Command::Check | Command::Run => unreachable!("handled above"),
        Command::Plan { json } => {
            let local = match engine.list_images().await {
                Ok(l) => l,
                Err(f) => return fail(&format!("engine: {}", f.detail)),
            };
            let plan = plan_pulls(&config.images, &local);
            print(&if json {
                report::plan_json(&config.source, &plan)
            } else {
                report::plan_text(&plan)
            });
            0
        }
        Command::Pull { json } => pull_once(&config, &engine, json, shutdown).await,
    }
}

async fn pull_once<E: Engine>(
    config: &Config,
    engine: &E,
    json: bool,
    shutdown: impl Future<Output = ()>,
) -> u8 {
    let credentials = CredentialSource::new(config.pull.credentials.as_deref());
    let stop = CancellationToken::new();
    let in_flight = InFlight::default();
    let puller = Puller {
        engine,
        settings: &config.pull,
        credentials: &credentials,
        stop: stop.clone(),
        in_flight: in_flight.clone(),
    };
    let work = puller.converge(&config.images);
    tokio::pin!(work, shutdown);
    let result = tokio::select! {
        r = &mut work => r,
        () = &mut shutdown => {
            tracing::info!("stopping: no new pulls start; waiting for in-flight pulls");
            stop.cancel();
            match tokio::time::timeout(config.pull.shutdown_grace, work).await {
                Ok(r) => r,
                Err(_) => {
                    let pending = in_flight.snapshot();
                    return fail(&if pending.is_empty() {
                        "stopped before the pulls finished".to_owned()
                    } else {
                        format!("stopped: abandoned in-flight pulls of {}", pending.join(", "))
                    });
                }
            }
        }
    };
    let outcomes = match result {
        Ok(o) => o,
        Err(f) => return fail(&format!("engine: {}", f.detail)),
    };
    print(&if json {
        report::pull_json(&config.source, &outcomes)
    } else {
        report::pull_text(&outcomes)
    });
    if Summary::of(&outcomes).all_ok() {
        0
    } else {
        EXIT_FAILURE
    }
}

fn check(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(c) => {
            print(&format!(
                "{}: valid ({} image{})\n",
                path.display(),
                c.images.len(),
                if c.images.len() == 1 { "" } else { "s" }
            ));
            0
        }
        Err(e) => config_error(&e),
    }
}

fn config_error(e: &ConfigError) -> u8 {
    eprintln!("{e}");
    if let ConfigError::Invalid { problems } = e {
        eprintln!(
            "stowage: the configuration has {} problem{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
    }
    EXIT_USAGE
}

fn usage(message: &str) -> u8 {
    eprintln!("stowage: {message}");
    EXIT_USAGE
}

fn fail(message: &str) -> u8 {
    eprintln!("stowage: {message}");
    EXIT_FAILURE
}

/// Writes command output; a closed pipe (`stowage plan | head`) is not an error worth a panic.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
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

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

use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::converge::{InFlight, Session, SessionError, Summary};
use crate::credentials::CredentialSource;
use crate::daemon;
use crate::engine::Engine;
use crate::engine::docker::{ConnectError, DockerEngine};
use crate::failure::explain;
use crate::lockfile::{LockFile, LockKey};
use crate::logging::{self, LogFormat};
use crate::metrics::Metrics;
use crate::pin;
use crate::readiness::Notifier;
use crate::registry::Resolver;
use crate::report;
use crate::state::State;

/// Exit code: the work failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration or the command line is wrong.
pub const EXIT_USAGE: u8 = 2;

/// Keeps this host's container images the way the configuration declares: pre-pulls required
/// images at boot and on a schedule, pinned to digests.
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
    /// One prune cycle now, by the `[prune]` rules: what goes, what stays and why.
    Prune {
        /// Change nothing: show what would be removed and why.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resolve every lockable tag to its digest and write the lock file (atomically).
    Pin {
        /// Change nothing; exit 1 if the lock file is missing or stale (for CI).
        #[arg(long)]
        check: bool,
    },
    /// Show each required image: pin, presence, pinned, local and registry digests, drift.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Do not ask registries for their current digests.
        #[arg(long)]
        offline: bool,
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
    match cli.command {
        Command::Check => return check(&cli.config),
        Command::Pin { check } => return pin(&cli.config, check).await,
        _ => {}
    }
    let (config, lock, _pinned) = match pin::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(e) => return config_error(&e),
    };
    let host = cli.docker_host.as_deref();
    tokio::pin!(shutdown);
    if let Command::Run = cli.command {
        // SIGHUP reloads the config; caught from the start, since its default action would end
        // the process. Signals that arrive during a reload are folded into one more reload.
        let (reload, mut reloads) = tokio::sync::mpsc::channel(1);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("received SIGHUP");
                        let _ = reload.try_send(());
                    }
                });
            }
            Err(e) => tracing::error!("cannot listen for SIGHUP: {e}; reload means restart"),
        }
        // The start counts from here: waiting for the engine is part of it.
        let ready_timeout = config.pull.ready_timeout;
        let notifier = Notifier::from_env();
        if config.images.is_empty() {
            // Nothing to wait for, not even the engine (a fresh package install, say).
            notifier.ready("ready: the config requires no image");
        }
        let started = tokio::time::Instant::now();
        let done = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        // Served from the start (engine wait included), so a scrape sees a daemon that is up
        // but not ready yet.
        let listener = match config.metrics {
            Some(addr) => match crate::metrics::bind(addr).await {
                Ok(l) => Some(l),
                Err(message) => return fail(&message),
            },
            None => None,
        };
        let serve_metrics = async {
            if let Some(listener) = listener {
                crate::metrics::serve(listener, metrics.clone(), done.clone()).await;
            }
        };
        let hold = async {
            notifier.hold_start(started, ready_timeout, &done).await;
            if notifier.is_ready() {
                metrics.ready();
            }
        };
        let daemon = async {
            let stop = CancellationToken::new();
            let prepared = tokio::select! {
                prepared = daemon::prepare(config, lock, host, &stop) => prepared,
                () = &mut shutdown => Ok(None),
            };
            let result = match prepared {
                Ok(Some((engine, session))) => {
                    daemon::run(session, engine, &notifier, &metrics, &mut reloads, shutdown).await;
                    Ok(Some(()))
                }
                Ok(None) => {
                    notifier.stopping();
                    Ok(None)
                }
                Err(e) => Err(e),
            };
            done.cancel();
            result
        };
        let (prepared, (), ()) = tokio::join!(daemon, hold, serve_metrics);
        return match prepared {
            Ok(_) => 0,
            Err(daemon::StartError::Config(problems)) => {
                config_error(&ConfigError::Invalid { problems })
            }
            Err(e) => usage(&e.to_string()),
        };
    }
    // plan, pull and status: one attempt to reach the engine, interruptible like the rest.
    let engine = tokio::select! {
        engine = DockerEngine::connect(host) => engine,
        () = &mut shutdown => return fail("stopped before the engine answered"),
    };
    let engine = match engine {
        Ok(e) => e,
        Err(ConnectError::BadAddress(message)) => return usage(&message),
        Err(ConnectError::Unreachable(f)) => return fail(&format!("engine: {}", f.detail)),
    };
    let session = match Session::new(config, lock, &engine).await {
        Ok(s) => s,
        Err(SessionError::Config(problems)) => {
            return config_error(&ConfigError::Invalid { problems });
        }
        Err(e) => return fail(&e.to_string()),
    };
    match cli.command {
        Command::Check | Command::Run | Command::Pin { .. } => unreachable!("handled above"),
        Command::Plan { json } => {
            let puller = session.puller(&engine, CancellationToken::new(), InFlight::default());
            let plan = match puller.plan(&session.pinned).await {
                Ok((plan, _)) => plan,
                Err(f) => return fail(&format!("engine: {}", f.detail)),
            };
            // The prune side, when the config has rules: what a cycle would remove and why.
            let prune = match &session.config.prune {
                Some(settings) => {
                    let pruner = session.pruner(
                        &engine,
                        settings,
                        InFlight::default(),
                        CancellationToken::new(),
                    );
                    match pruner.plan().await {
                        Ok((p, _)) => Some(p),
                        Err(f) => return fail(&format!("engine: {}", f.detail)),
                    }
                }
                None => None,
            };
            if json {
                let mut doc: serde_json::Value =
                    serde_json::from_str(&report::plan_json(&session.config.source, &plan))
                        .expect("our own JSON");
                if let Some(p) = &prune {
                    doc["prune"] = report::prune_json(p, &[]);
                }
                print(&(serde_json::to_string_pretty(&doc).expect("plain data") + "\n"));
            } else {
                let mut text = report::plan_text(&plan);
                if let Some(p) = &prune {
                    text.push_str("\nPrune (one cycle now):\n");
                    text.push_str(&report::prune_text(p, &[], chrono::Utc::now().timestamp()));
                }
                print(&text);
            }
            0
        }
        Command::Status { json, offline } => status(&session, &engine, json, offline).await,
        Command::Prune { dry_run, json } => prune(&session, &engine, dry_run, json).await,
        Command::Pull { json } => pull_once(&session, &engine, json, shutdown).await,
    }
}

async fn pull_once<E: Engine>(
    session: &Session,
    engine: &E,
    json: bool,
    shutdown: impl Future<Output = ()>,
) -> u8 {
    let stop = CancellationToken::new();
    let in_flight = InFlight::default();
    let puller = session.puller(engine, stop.clone(), in_flight.clone());
    let work = puller.converge(&session.pinned);
    tokio::pin!(work, shutdown);
    let result = tokio::select! {
        r = &mut work => r,
        () = &mut shutdown => {
            tracing::info!("stopping: no new pulls start; waiting for in-flight pulls");
            stop.cancel();
            match tokio::time::timeout(session.config.pull.shutdown_grace, work).await {
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
        report::pull_json(&session.config.source, &outcomes)
    } else {
        report::pull_text(&outcomes)
    });
    if Summary::of(&outcomes).all_ok() {
        0
    } else {
        EXIT_FAILURE
    }
}

async fn status<E: Engine>(session: &Session, engine: &E, json: bool, offline: bool) -> u8 {
    let puller = session.puller(engine, CancellationToken::new(), InFlight::default());
    // Which images the plan itself resolves (follow, and first-pull without a pin yet): their
    // registry digest is the plan's, asked once.
    let resolved_by_plan: Vec<bool> = {
        let state = session
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        session
            .pinned
            .iter()
            .map(|p| p.mode != pin::PinMode::Lock && p.needs_resolution(&state))
            .collect()
    };
    let plan = match puller.plan_with(&session.pinned, !offline).await {
        Ok((plan, _)) => plan,
        Err(f) => return fail(&format!("engine: {}", f.detail)),
    };
    let mut rows = Vec::with_capacity(plan.len());
    for (d, by_plan) in plan.into_iter().zip(resolved_by_plan) {
        let image = &d.pinned.image;
        let (registry_digest, failure) = if offline {
            (None, None)
        } else if by_plan {
            (d.digest.clone(), d.failure.clone())
        } else {
            // Ask about the tag, never the pinned digest: the question is whether it moved.
            match image.reference.by_tag() {
                Some(tag) => match session
                    .resolver
                    .resolve(&tag, image.platform.as_deref())
                    .await
                {
                    Ok(r) => (Some(r.digest), None),
                    Err(f) => (None, Some(f)),
                },
                None => (None, None),
            }
        };
        rows.push(report::StatusRow {
            registry_error: failure.as_ref().map(|f| explain(&image.reference, f)),
            registry_error_class: failure.map(|f| f.class),
            registry_digest,
            decision: d,
        });
    }
    print(&if json {
        report::status_json(&session.config.source, &rows)
    } else {
        report::status_text(&rows)
    });
    0
}

async fn prune(session: &Session, engine: &DockerEngine, dry_run: bool, json: bool) -> u8 {
    let default_settings;
    let settings = match &session.config.prune {
        Some(s) => s,
        None => {
            // No [prune] table: the defaults (dangling images only, after an hour).
            default_settings = Config::parse(Path::new("defaults"), "[prune]\n")
                .ok()
                .and_then(|c| c.prune)
                .expect("the default prune settings are valid");
            &default_settings
        }
    };
    let pruner = session.pruner(
        engine,
        settings,
        InFlight::default(),
        CancellationToken::new(),
    );
    let (plan, removals) = match pruner.cycle(dry_run).await {
        Ok(c) => (c.plan, c.removals),
        Err(f) => return fail(&format!("engine: {}", f.detail)),
    };
    if json {
        let doc = serde_json::json!({
            "config": session.config.source,
            "dry_run": dry_run,
            "prune": report::prune_json(&plan, &removals),
        });
        print(&(serde_json::to_string_pretty(&doc).expect("plain data") + "\n"));
    } else {
        print(&report::prune_text(
            &plan,
            &removals,
            chrono::Utc::now().timestamp(),
        ));
    }
    if removals.iter().any(|r| r.result == "failed") {
        EXIT_FAILURE
    } else {
        0
    }
}

/// `stowage pin`: resolve every lockable image and write (or check) the lock. Needs no engine:
/// a lock entry holds every platform of an index, so it can be made anywhere, CI included.
async fn pin(path: &Path, check: bool) -> u8 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let old = match LockFile::load(&config.lock_file) {
        Ok(lock) => lock,
        Err(problems) => return config_error(&ConfigError::Invalid { problems }),
    };
    let credentials = CredentialSource::new(config.pull.credentials.as_deref());
    // What the state file and the old lock know about indexes: not fetched again.
    let cache = Arc::new(Mutex::new(State::load(&config.state_file).index_platforms));
    // The platform only matters for `resolve`, which pin does not use.
    let resolver = Resolver::new(&config, credentials, String::new(), cache);
    if let Some(old) = &old {
        resolver.learn(
            old.entries
                .values()
                .map(|e| (e.digest.clone(), e.platforms.clone())),
        );
    }
    let mut new = LockFile::default();
    let mut failed = false;
    for image in config.images.iter().filter(|i| pin::is_lockable(i)) {
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
        return fail(&format!(
            "{} not written: some images could not be resolved",
            config.lock_file.display()
        ));
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
            return fail(&format!("{}: no lock file", config.lock_file.display()));
        }
        return if stale { EXIT_FAILURE } else { 0 };
    }
    if stale && let Err(e) = new.write(&config.lock_file) {
        return fail(&format!(
            "{}: cannot write the lock file: {e}",
            config.lock_file.display()
        ));
    }
    0
}

fn check(path: &Path) -> u8 {
    match pin::load(path) {
        Ok((c, lock, _)) => {
            print(&format!(
                "{}: valid ({} image{}; {})\n",
                path.display(),
                c.images.len(),
                if c.images.len() == 1 { "" } else { "s" },
                match lock {
                    Some(l) => format!(
                        "lock file {} with {} entries",
                        c.lock_file.display(),
                        l.entries.len()
                    ),
                    None => "no lock file".to_owned(),
                }
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

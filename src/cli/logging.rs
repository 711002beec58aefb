//! Log output: readable on a terminal, one line per event for journald, JSON for shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Text; colours and timestamps on a terminal, no timestamps under journald (it adds its
    /// own), plain timestamped lines anywhere else.
    Auto,
    /// Plain timestamped text lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether a person watches standard error: a terminal, text logs, not the journal. Only then
/// does a command show a progress bar.
pub(super) fn interactive(format: LogFormat) -> bool {
    format != LogFormat::Json
        && std::io::stderr().is_terminal()
        && std::env::var_os("JOURNAL_STREAM").is_none()
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive (`info`,
/// `stowage=debug`, ...). Logs go to standard error; standard output is for command results.
pub(super) fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter \"{filter}\": {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Above a progress bar while one shows (see `super::progress`).
        .with_writer(|| super::progress::AroundTheBar)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Auto if std::io::stderr().is_terminal() => builder.try_init(),
        // systemd sets JOURNAL_STREAM when standard error is the journal.
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.with_ansi(false).without_time().try_init()
        }
        LogFormat::Auto => builder.with_ansi(false).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

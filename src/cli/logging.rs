//! Log output: readable on a terminal, one line per event for journald, JSON for shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

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

/// syslog's level names, which journald and operators use, as tracing's.
const SYSLOG_LEVELS: [(&str, LevelFilter); 6] = [
    ("emerg", LevelFilter::ERROR),
    ("alert", LevelFilter::ERROR),
    ("crit", LevelFilter::ERROR),
    ("err", LevelFilter::ERROR),
    ("warning", LevelFilter::WARN),
    ("notice", LevelFilter::INFO),
];

/// The filter as `EnvFilter` directives, every level in it read as a level. `EnvFilter` reads
/// a word that is not one of its levels as a target: `warning` (or `verbose`) would show the
/// events of a target of that name, none of stowage's, and the log would fall silent.
fn directives(filter: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            // A span's field value (`target[span{field=x}]`), not a level: as written.
            Some((_, value)) if value.contains([']', '}']) => {
                out.push(directive.to_owned());
                continue;
            }
            Some((target, level)) => (Some(target), level),
            None => (None, directive),
        };
        let level = read_level(level).ok_or_else(|| {
            format!(
                "invalid log level \"{level}\" in --log-level (or STOWAGE_LOG) \"{filter}\": \
                 accepted are off, error, warn, info, debug, trace (and syslog's emerg, alert, \
                 crit, err, warning, notice), or directives such as \"info,stowage=debug\""
            )
        })?;
        out.push(match target {
            Some(target) => format!("{target}={level}"),
            None => level.to_string(),
        });
    }
    if out.is_empty() {
        return Err(format!(
            "empty log level in --log-level (or STOWAGE_LOG) \"{filter}\": use info, the default"
        ));
    }
    Ok(out.join(","))
}

fn read_level(word: &str) -> Option<LevelFilter> {
    word.parse::<LevelFilter>().ok().or_else(|| {
        SYSLOG_LEVELS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|(_, level)| *level)
    })
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive (`info`,
/// `stowage=debug`, ...). Logs go to standard error; standard output is for command results.
pub(super) fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let directives = directives(filter)?;
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| format!("invalid log filter \"{filter}\": {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn levels_are_read_as_levels_whatever_their_spelling() {
        for (given, read) in [
            ("info", "info"),
            ("WARN", "warn"),
            ("warning", "warn"),
            ("err", "error"),
            ("crit", "error"),
            ("notice", "info"),
            ("debug", "debug"),
            ("off", "off"),
            ("4", "debug"),
            ("warning,stowage=debug", "warn,stowage=debug"),
            (" info , hyper=warning ", "info,hyper=warn"),
            ("stowage[pull{image=x}]", "stowage[pull{image=x}]"),
        ] {
            assert_eq!(directives(given).as_deref(), Ok(read), "{given}");
        }
    }

    #[test]
    fn an_unknown_level_is_refused_never_silence() {
        for given in ["verbose", "warnings", "stowage=loud", "stowage", ""] {
            let error = directives(given).unwrap_err();
            assert!(error.contains("--log-level"), "{given}: {error}");
        }
        let error = directives("verbose").unwrap_err();
        assert!(
            error.contains("\"verbose\"") && error.contains("warning"),
            "{error}"
        );
    }
}

//! Log output: readable on a terminal, one line per event for journald, JSON for shippers.

use std::io::{IsTerminal, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Text; colours and timestamps on a terminal; under journald each line with its syslog
    /// priority and no timestamp (journald adds its own); plain timestamped lines elsewhere.
    Auto,
    /// Plain timestamped text lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where log lines, and the error a command ends with, are written: decided once, at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// A terminal: colours, timestamps, and a progress bar for `pull`.
    Terminal,
    /// journald (systemd's `JOURNAL_STREAM` names standard error): one line per event, each
    /// with its syslog priority (`<3>`, sd-daemon(3)), no timestamp (journald adds its own).
    Journal,
    /// One JSON object per line.
    Json,
    /// Plain timestamped lines, one per event.
    Text,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Where this process writes its logs (plain text until [`init`] decides).
pub(crate) fn sink() -> Sink {
    SINK.get().copied().unwrap_or(Sink::Text)
}

/// A command line clap refused (not `--help` or `--version`), written where its logs would
/// have gone, and the exit code. A terminal and plain text get clap's own words and usage;
/// journald and JSON logs get its first line as one error event, so a unit started with a
/// wrong flag says so in the log's own format. The format is read from `args` as well as
/// it can be: the line did not parse.
pub(crate) fn usage_error(error: &clap::Error, args: &[std::ffi::OsString]) -> u8 {
    let format = requested_format(args).unwrap_or(LogFormat::Auto);
    let sink = *SINK.get_or_init(|| sink_for(format));
    if matches!(sink, Sink::Terminal | Sink::Text) {
        let _ = error.print();
        return super::error::EXIT_USAGE;
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let what = first.strip_prefix("error: ").unwrap_or(first);
    final_error(&format!("{what}; see `stowage --help`"), &[]);
    super::error::EXIT_USAGE
}

/// The `--log-format` value in `args`, when one is there and valid.
fn requested_format(args: &[std::ffi::OsString]) -> Option<LogFormat> {
    use clap::ValueEnum as _;
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let value = args.iter().enumerate().find_map(|(i, a)| match *a {
        "--log-format" => args.get(i + 1).copied(),
        _ => a.strip_prefix("--log-format="),
    })?;
    LogFormat::from_str(value, false).ok()
}

/// Whether a person watches standard error: a terminal, text logs, not the journal. Only then
/// does a command show a progress bar.
pub(super) fn interactive() -> bool {
    sink() == Sink::Terminal
}

fn sink_for(format: LogFormat) -> Sink {
    match format {
        LogFormat::Json => Sink::Json,
        LogFormat::Text => Sink::Text,
        LogFormat::Auto if stderr_is_journal() => Sink::Journal,
        LogFormat::Auto if std::io::stderr().is_terminal() => Sink::Terminal,
        LogFormat::Auto => Sink::Text,
    }
}

/// Whether standard error is journald's stream: systemd sets `JOURNAL_STREAM` to its device
/// and inode (`dev:ino`, decimal), and a child whose standard error was redirected inherits
/// the variable with another file, so both are compared (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The syslog priority journald files a line of `level` under (`journalctl -p`).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `text` on one line: a line is an event to journald and to log shippers, so a message with
/// line breaks (a config's problems) would be cut into events of their own.
pub(crate) fn one_line(text: &str) -> String {
    text.trim_end_matches('\n').replace('\n', "; ")
}

/// An event format that writes each event on one line, after its syslog priority for journald.
struct OneLine<F> {
    inner: F,
    priority: bool,
}

impl<S, N, F> FormatEvent<S, N> for OneLine<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.priority {
            write!(writer, "<{}>", priority(*event.metadata().level()))?;
        }
        writeln!(writer, "{}", one_line(&line))
    }
}

/// The error a command ends with, written as its logs are: `stowage: ` text, with journald's
/// error priority, or a JSON object, one line each. Written whatever the log filter says: it
/// is the command's answer. `fields` go into the JSON object (a problem's path and line).
pub(crate) fn final_error(message: &str, fields: &[(&str, serde_json::Value)]) {
    let line = match sink() {
        Sink::Terminal | Sink::Text => format!("stowage: {message}"),
        Sink::Journal => format!("<{}>stowage: {}", priority(Level::ERROR), one_line(message)),
        Sink::Json => {
            let mut object = serde_json::Map::new();
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            object.insert("timestamp".into(), now.into());
            object.insert("level".into(), "ERROR".into());
            object.insert("message".into(), message.into());
            for (key, value) in fields {
                object.insert((*key).to_owned(), value.clone());
            }
            serde_json::Value::Object(object).to_string()
        }
    };
    let _ = writeln!(super::progress::AroundTheBar, "{line}");
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
            let whole = if filter.trim() == level {
                String::new()
            } else {
                format!(" (in \"{filter}\")")
            };
            format!(
                "invalid log level \"{level}\"{whole} in --log-level or STOWAGE_LOG: \
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
    let sink = sink_for(format);
    let _ = SINK.set(sink);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Above a progress bar while one shows (see `super::progress`).
        .with_writer(|| super::progress::AroundTheBar);
    let text = tracing_subscriber::fmt::format()
        .with_target(false)
        .with_ansi(false);
    let result = match sink {
        Sink::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .try_init(),
        Sink::Terminal => builder.with_target(false).try_init(),
        Sink::Journal => builder
            .event_format(OneLine {
                // The priority says the level, and journald adds the time.
                inner: text.without_time().with_level(false),
                priority: true,
            })
            .try_init(),
        Sink::Text => builder
            .event_format(OneLine {
                inner: text,
                priority: false,
            })
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{OneLine, directives};

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

    /// What `format` writes for an error with a line break, a warning and an info event.
    fn written(priority: bool) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || out.clone())
            .event_format(OneLine {
                inner: tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(!priority)
                    .with_target(false)
                    .with_ansi(false),
                priority,
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("reload failed:\nc.toml:1:1: bad\nc.toml:2:1: worse\n");
            tracing::warn!(image = "r/a:1", "pull failed");
            tracing::info!("pulled");
            tracing::debug!("details");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn journald_gets_one_line_per_event_with_its_priority() {
        assert_eq!(
            written(true),
            "<3>reload failed:; c.toml:1:1: bad; c.toml:2:1: worse\n\
             <4>pull failed image=\"r/a:1\"\n\
             <6>pulled\n\
             <7>details\n"
        );
        let plain = written(false);
        assert_eq!(plain.lines().count(), 4, "{plain}");
        assert!(!plain.contains('<'), "{plain}");
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

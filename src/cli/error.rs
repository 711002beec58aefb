//! The one error boundary: every way a command can fail, the message it prints, and the exit
//! code it ends with.
//!
//! Exit codes: 0 success; 1 the work failed (an image could not be pulled, the engine could not
//! be reached); 2 the configuration or the command line is wrong (clap's convention for usage
//! errors, and what Ansible's `validate:` expects from `check`).

use super::logging;
use crate::io::engine::docker::ConnectError;
use crate::model::failure::Failure;
use crate::policy::config::ConfigError;
use crate::service::daemon::StartError;
use crate::service::session::SessionError;

/// Exit code: the work failed.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration or the command line is wrong.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum Error {
    /// The configuration or its lock cannot be used.
    Config(ConfigError),
    /// The command line or the engine address is wrong.
    Usage(String),
    /// An operation on the engine failed.
    Engine(Failure),
    /// The work failed, as the message says.
    Failed(String),
    /// The work failed, and the report already printed says how.
    Reported,
    /// The configuration is wrong, and the report already printed says how (`check --json`).
    ConfigReported,
}

impl Error {
    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) | Error::ConfigReported => EXIT_USAGE,
            Error::Engine(_) | Error::Failed(_) | Error::Reported => EXIT_FAILURE,
        }
    }

    /// Writes the message to standard error, as the logs are written (text, journald or
    /// JSON; see [`logging::final_error`]): every problem of a config, located, one a line,
    /// then their count; anything else on one line.
    pub(crate) fn print(&self) {
        match self {
            Error::Config(ConfigError::Invalid { problems }) => {
                for p in problems {
                    let at = [
                        ("path", p.path.display().to_string().into()),
                        ("line", p.line.into()),
                        ("column", p.column.into()),
                    ];
                    problem(&p.to_string(), &at);
                }
                logging::final_error(
                    &format!(
                        "the configuration has {}",
                        super::report::count(problems.len(), "problem", "problems")
                    ),
                    &[],
                );
            }
            Error::Config(e @ ConfigError::Read { path, .. }) => {
                let at = [("path", path.display().to_string().into())];
                problem(&e.to_string(), &at);
            }
            Error::Usage(message) | Error::Failed(message) => logging::final_error(message, &[]),
            Error::Engine(f) => logging::final_error(&format!("engine: {f}"), &[]),
            Error::Reported | Error::ConfigReported => {}
        }
    }
}

/// One located problem of a file: `path:line:column: message` on its own line in text, as
/// compilers write them (and editors jump to); its own event elsewhere.
fn problem(text: &str, at: &[(&str, serde_json::Value)]) {
    match logging::sink() {
        logging::Sink::Terminal | logging::Sink::Text => eprintln!("{text}"),
        _ => logging::final_error(text, at),
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Config(e) => Error::Config(e),
            SessionError::Engine(f) => Error::Engine(f),
        }
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::BadAddress(message) => Error::Usage(message),
            ConnectError::Unreachable(f) => Error::Engine(f),
        }
    }
}

impl From<StartError> for Error {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Config(e) => Error::Config(e),
            StartError::Connect(e) => Error::Usage(e.to_string()),
            StartError::Metrics(message) => Error::Failed(message),
            StartError::OwnImage(message) => Error::Usage(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::failure::FailureClass;
    use crate::model::problem::Problem;

    fn problem() -> Problem {
        Problem {
            path: "c.toml".into(),
            line: 1,
            column: 1,
            message: "bad".into(),
        }
    }

    #[test]
    fn configuration_and_usage_errors_exit_2_and_failed_work_exits_1() {
        let invalid = || ConfigError::Invalid {
            problems: vec![problem()],
        };
        let config = Error::from(SessionError::Config(invalid()));
        assert!(matches!(config, Error::Config(ConfigError::Invalid { .. })));
        assert_eq!(config.exit_code(), EXIT_USAGE);
        let address = Error::from(ConnectError::BadAddress("ftp://x".into()));
        assert_eq!(address.exit_code(), EXIT_USAGE);
        let down = Failure::new(FailureClass::Engine, "cannot reach the Docker engine");
        let unreachable = Error::from(ConnectError::Unreachable(down.clone()));
        assert!(matches!(unreachable, Error::Engine(_)));
        assert_eq!(unreachable.exit_code(), EXIT_FAILURE);
        assert_eq!(
            Error::from(SessionError::Engine(down)).exit_code(),
            EXIT_FAILURE
        );
        assert_eq!(Error::Reported.exit_code(), EXIT_FAILURE);
        let start = Error::from(StartError::Config(invalid()));
        assert_eq!(start.exit_code(), EXIT_USAGE);
        assert_eq!(
            Error::from(StartError::Metrics("in use".into())).exit_code(),
            EXIT_FAILURE
        );
    }
}

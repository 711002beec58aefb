//! Running stowage: the binary pointed at the test engine, a running command whose JSON log
//! lines and output are collected as they arrive, and matching those log lines.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::env::Env;

impl Env {
    /// The stowage binary, pointed at the hermetic engine, logging JSON.
    pub(crate) fn stowage(&self, config: &Path) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("stowage"));
        cmd.arg("--config")
            .arg(config)
            .arg("--log-format")
            .arg("json")
            .env("DOCKER_HOST", &self.docker_host)
            .env(
                "DOCKER_CONFIG",
                std::env::temp_dir().join("stowage-tests-nocreds"),
            )
            .env_remove("STOWAGE_CONFIG")
            .env_remove("STOWAGE_LOG");
        cmd
    }
}

/// A running stowage command (`run`, or a `pull` to interrupt), its JSON log lines and its
/// standard output collected as they arrive.
pub(crate) struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
    stdout: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `cmd` with `args` (e.g. `["run"]`).
    pub(crate) fn start(mut cmd: Command, args: &[&str]) -> Daemon {
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stowage starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logs are JSON; the final `stowage: ...` error line is not: keep it as a string.
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(value);
            }
        });
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon {
            child,
            logs,
            stdout,
        }
    }

    /// What the command printed on standard output so far.
    pub(crate) fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the process to exit by itself; panics after `limit` (a liveness bound).
    pub(crate) fn wait(mut self, limit: Duration) -> (i32, Vec<Value>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code().unwrap_or(-1), self.logs(), self.stdout());
            }
            if start.elapsed() > limit {
                panic!(
                    "stowage did not finish within {limit:?}; logs: {:#?}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred`; panics with the logs after `limit` (a liveness
    /// bound, not a performance assertion).
    pub(crate) fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.logs().into_iter().find(&pred) {
                return v;
            }
            if start.elapsed() > limit {
                panic!(
                    "no log line {what} within {limit:?}; logs: {:#?}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.logs().iter().filter(|v| pred(v)).count()
    }

    /// Sends SIGHUP: reload the config.
    /// The process ID, for a signal sent by another program.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(mut self, limit: Duration) -> (i32, Vec<Value>) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                // Let the reader thread drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status.code().unwrap_or(-1), self.logs());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "stowage did not stop within {limit:?} of SIGTERM; logs: {:#?}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a JSON log line has `message` (exact) and, if given, string field `key` equal to
/// `value`.
pub(crate) fn is_event(v: &Value, message: &str, field: Option<(&str, &str)>) -> bool {
    v["message"].as_str() == Some(message)
        && field.is_none_or(|(k, want)| v[k].as_str() == Some(want))
}

/// The entry for image `name` in a JSON report's `images` (`plan`, `pull`, `status`).
pub(crate) fn entry<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc:#}"))
}

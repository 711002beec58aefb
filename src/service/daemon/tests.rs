//! The daemon's loops against the fake engine, under paused time: the boot pass and readiness,
//! the retry of what is missing, a reload that drains the running config, and a shutdown that
//! abandons a pull past its grace.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::io::fake::FakeEngine;
use crate::model::failure::{Failure, FailureClass};
use crate::service::metrics;
use crate::service::session::load;

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A config requiring `r.example/NAME:1` at a fixed digest, one per name, in `dir`.
fn write_config(dir: &Path, names: &[char], pull: &str) {
    let mut text = format!("[state]\nfile = \"state.json\"\n[pull]\n{pull}\n");
    for c in names {
        text.push_str(&format!(
            "[[image]]\nname = \"r.example/{c}:1@{}\"\n",
            digest(*c)
        ));
    }
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

async fn session(dir: &Path, engine: &FakeEngine) -> Session {
    let Loaded { config, lock } = load(&dir.join("config.toml")).unwrap();
    Session::new(config, lock, engine).await.unwrap()
}

/// Polls `done` every 100 ms of paused time, for at most an hour of it.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..36_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened");
}

struct Daemon {
    dir: tempfile::TempDir,
    engine: FakeEngine,
    probes: Probes,
    shutdown: Shutdown,
}

impl Daemon {
    fn new(names: &[char], pull: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), names, pull);
        let engine = FakeEngine::default();
        for c in ['a', 'b'] {
            engine.serve(&digest(c));
        }
        Daemon {
            dir,
            engine,
            probes: Probes::new(Metrics::new(), Notifier::from_env()),
            shutdown: Shutdown::new(),
        }
    }

    /// Runs the daemon beside `driver`, which ends by triggering the shutdown.
    async fn run_with(&self, reloads: &mut mpsc::Receiver<()>, driver: impl Future<Output = ()>) {
        let session = session(self.dir.path(), &self.engine).await;
        // No metrics listener: the endpoint task serves nothing until a reload names one.
        let (endpoint, serving) = metrics::serve(None, self.probes.clone(), self.shutdown.clone());
        let outside = Outside {
            probes: &self.probes,
            endpoint: &endpoint,
            reloads,
        };
        let daemon = run(session, self.engine.clone(), outside, &self.shutdown);
        tokio::join!(daemon, driver, serving);
    }
}

#[tokio::test(start_paused = true)]
async fn the_boot_pass_pulls_then_reports_ready_and_a_shutdown_ends_the_daemon() {
    let d = Daemon::new(&['a'], "");
    let (_tx, mut reloads) = mpsc::channel(1);
    d.run_with(&mut reloads, async {
        until(|| d.probes.notifier.is_ready()).await;
        assert!(d.engine.tagged("r.example/a:1").is_some());
        d.shutdown.trigger();
    })
    .await;
    assert_eq!(d.engine.pulls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn what_a_pass_leaves_missing_is_retried_until_present_and_only_then_ready() {
    let d = Daemon::new(&['b'], "retries = 0");
    // The boot pass loses b's pull, then the first retry loses it again.
    d.engine.fail_next([
        Failure::new(FailureClass::Network, "connection reset"),
        Failure::new(FailureClass::Network, "connection reset"),
    ]);
    let (_tx, mut reloads) = mpsc::channel(1);
    let driver = async {
        until(|| d.engine.pulls().len() == 2).await;
        assert!(!d.probes.notifier.is_ready(), "b is still missing");
        until(|| d.probes.notifier.is_ready()).await;
        assert!(d.engine.tagged("r.example/b:1").is_some());
        d.shutdown.trigger();
    };
    d.run_with(&mut reloads, driver).await;
    assert_eq!(
        d.engine.pulls().len(),
        3,
        "the boot pull and one retry failed; the next worked"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_lets_the_running_pull_finish_then_the_new_config_takes_over() {
    let d = Daemon::new(&['a'], "shutdown_grace = \"1m\"");
    d.engine.set_pull_time(Duration::from_secs(30));
    let (tx, mut reloads) = mpsc::channel(1);
    let driver = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(d.engine.pulls().len(), 1, "a is being pulled");
        write_config(d.dir.path(), &['b'], "shutdown_grace = \"1m\"");
        tx.send(()).await.unwrap();
        until(|| d.engine.tagged("r.example/b:1").is_some()).await;
        d.shutdown.trigger();
    };
    d.run_with(&mut reloads, driver).await;
    assert!(
        d.engine.tagged("r.example/a:1").is_some(),
        "the pull under way was drained, not abandoned"
    );
    let pulls = d.engine.pulls();
    assert!(pulls[0].starts_with("r.example/a") && pulls[1].starts_with("r.example/b"));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_reload_changes_nothing() {
    let d = Daemon::new(&['a'], "");
    let (tx, mut reloads) = mpsc::channel(1);
    let driver = async {
        until(|| d.probes.notifier.is_ready()).await;
        std::fs::write(d.dir.path().join("config.toml"), "[pull]\nretries = -1\n").unwrap();
        tx.send(()).await.unwrap();
        // The reload is reported; the running config goes on (its next pass would pull a).
        tokio::time::sleep(Duration::from_secs(5)).await;
        d.shutdown.trigger();
    };
    d.run_with(&mut reloads, driver).await;
    let text = d.probes.metrics.encode();
    assert!(
        text.contains("stowage_config_reloads_total{result=\"failed\"} 1"),
        "{text}"
    );
    assert_eq!(d.engine.pulls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_abandons_a_pull_still_running_at_the_end_of_the_grace() {
    let d = Daemon::new(&['a'], "shutdown_grace = \"10s\"");
    d.engine.set_pull_time(Duration::from_secs(3600));
    let (_tx, mut reloads) = mpsc::channel(1);
    let started = tokio::time::Instant::now();
    d.run_with(&mut reloads, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        d.shutdown.trigger();
    })
    .await;
    assert!(d.engine.tagged("r.example/a:1").is_none(), "abandoned");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not held by the pull"
    );
}

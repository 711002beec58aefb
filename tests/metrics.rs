//! Prometheus metrics from the running daemon: the values after real pulls and a real prune
//! cycle, the exposition checked by `promtool`, and a real Prometheus scraping it.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    Daemon, Scratch, engine_lock, env, free_port, fresh_repo, http_get as get, is_event,
    try_http_get as try_get,
};

const LIVENESS: Duration = Duration::from_secs(90);

/// The value of the sample `metric` (name and labels exactly as exposed).
fn value<'a>(text: &'a str, metric: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(' '))
        .map(|l| &l[metric.len() + 1..])
}

/// A Prometheus server of the test's own, scraping `target` every second.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: u16) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: stowage\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package) starts");
        Prometheus { child, port }
    }

    /// The value of an instant query's first sample, once there is one.
    fn query(&self, expr: &str) -> String {
        let start = Instant::now();
        let path = format!(
            "/api/v1/query?query={}",
            expr.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('=', "%3D")
        );
        loop {
            if let Some((200, body)) = try_get(self.port, &path) {
                let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(v) = doc["data"]["result"][0]["value"][1].as_str() {
                    return v.to_owned();
                }
            }
            assert!(
                start.elapsed() < LIVENESS,
                "Prometheus never had a sample of {expr}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_daemon_exports_what_it_did_and_prometheus_scrapes_it() {
    let _lock = engine_lock();
    let env = env();
    let present = env.plain_image("alpha:1");
    let missing = env.plain_image(&format!("{}:1", fresh_repo("never")));
    env.remove_images(std::slice::from_ref(&present));
    // A dangling image for the prune cycle to remove, and no other: one left by a test that
    // failed before this one would be removed too.
    assert!(env.docker(&["image", "prune", "-f"]).status.success());
    env.dangling_image("gamma:1");

    let scratch = Scratch::new();
    crate::prune::seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let port = free_port();
    let config = scratch.config(
        "schedule = \"0 0 1 1 *\"\nready_timeout = \"1s\"",
        &[present.clone(), missing.clone()],
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "[prune]\nschedule = \"*/2 * * * * *\"\npause = \"0s\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("the boot run", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "boot")))
    });
    daemon.wait_for("a prune cycle", LIVENESS, |v| {
        is_event(v, "prune cycle finished", None) && v["removed"] == 1
    });
    daemon.wait_for("ready", LIVENESS, |v| is_event(v, "ready", None));

    // The log lines come just before the metrics are recorded: scrape until they show.
    let start = Instant::now();
    let body = loop {
        let (status, body) = get(port, "/metrics");
        assert_eq!(status, 200, "{body}");
        if value(&body, "stowage_ready") == Some("1")
            && value(&body, "stowage_prune_cycles_total{trigger=\"schedule\"}").is_some()
        {
            break body;
        }
        assert!(
            start.elapsed() < LIVENESS,
            "not ready in the metrics: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let expect = |metric: &str, want: &str| {
        assert_eq!(value(&body, metric), Some(want), "{metric} in:\n{body}");
    };
    expect("stowage_required_images", "2");
    expect("stowage_missing_images", "1");
    expect(
        &format!("stowage_image_present{{image=\"{present}\"}}"),
        "1",
    );
    expect(
        &format!("stowage_image_present{{image=\"{missing}\"}}"),
        "0",
    );
    expect("stowage_pull_images_total{result=\"pulled\"}", "1");
    expect("stowage_pull_runs_total{trigger=\"boot\"}", "1");
    // Once at boot, and again at each retry that has run by now.
    let at_least_one = |metric: &str| {
        let n: u64 = value(&body, metric)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n >= 1, "{metric} in:\n{body}");
    };
    at_least_one("stowage_pull_failures_total{class=\"not-found\"}");
    at_least_one("stowage_registry_attempts_total");
    expect("stowage_ready", "1");
    expect("stowage_prune_removed_images_total{rule=\"dangling\"}", "1");
    assert!(
        value(&body, "stowage_data_root_used_ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0 && r <= 1.0),
        "{body}"
    );
    assert_eq!(get(port, "/nothing").0, 404);

    // promtool, Prometheus's own checker, accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it.
    let prometheus = Prometheus::start(scratch.dir.path(), port);
    assert_eq!(prometheus.query("up{job=\"stowage\"}"), "1");
    assert_eq!(prometheus.query("stowage_required_images"), "2");
    drop(prometheus);

    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.remove_images(std::slice::from_ref(&present));
}

/// The shipped alert rules: promtool accepts them, and their unit tests (every alert, firing
/// and not firing) pass.
#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package) runs");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a test of its own.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for name in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "no test for {name}"
        );
    }
}

/// Polls the metrics until `metric` reads `want`.
fn wait_for_value(port: u16, metric: &str, want: &str) {
    let read = || value(&get(port, "/metrics").1, metric).map(str::to_owned);
    crate::support::poll(LIVENESS, || read().filter(|v| v == want))
        .unwrap_or_else(|| panic!("{metric} never read {want}: {:?}", read()));
}

#[test]
fn check_updates_asks_the_registry_with_one_head_and_shows_a_moved_tag() {
    let _lock = engine_lock();
    let env = env();
    // A repository of the test's own, so moving its tag disturbs no other test.
    let tag = format!("{}:1", fresh_repo("updates"));
    env.point_tag(&tag, "alpha:1");
    let image = env.plain_image(&tag);
    let scratch = Scratch::new();
    let port = free_port();
    let config = scratch.config("schedule = \"0 0 1 1 *\"", std::slice::from_ref(&image));
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "pin = \"first-pull\"\n[pin]\ncheck_updates = \"1s\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("ready", LIVENESS, |v| is_event(v, "ready", None));
    let metric = format!("stowage_image_update_available{{image=\"{image}\"}}");
    wait_for_value(port, &metric, "0");

    // Between two checks, only HEADs of the tag: no pull, no blob.
    let repo = tag.split(':').next().unwrap();
    let mark = env.plain_log_mark();
    std::thread::sleep(Duration::from_secs(3));
    let requests = env.plain_requests(mark);
    let mine: Vec<&String> = requests.iter().filter(|r| r.contains(repo)).collect();
    assert!(!mine.is_empty(), "no check in 3 s: {requests:#?}");
    assert!(
        mine.iter()
            .all(|r| r.starts_with(&format!("HEAD /v2/stowage-test/{repo}/manifests/1 "))),
        "{mine:#?}"
    );
    assert!(mine.len() <= 5, "more than one HEAD a second: {mine:#?}");

    // The tag moves: an update is available; the pin, and the image, stay.
    env.point_tag(&tag, "beta:1");
    wait_for_value(port, &metric, "1");
    let (_, body) = get(port, "/metrics");
    assert!(
        body.lines().any(|l| l.starts_with("stowage_image_info{")
            && l.contains(&image)
            && l.contains("first-pull")),
        "{body}"
    );
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.remove_images(&[image]);
}

//! The fleet simulation's short version: three hermetic Docker 20.10 engines as hosts, each
//! with its own `stowage run`, one config and lock shipped to all, an origin registry and a
//! pull-through mirror (`scripts/fleet-sim.sh 3 4`; docs/fleet.md has the full run).

use std::process::Command;

use serde_json::Value;

use crate::skip_on;
use crate::support::{Scratch, engine_lock, env};

#[test]
fn three_hosts_converge_through_a_mirror_wait_for_the_window_and_survive_its_loss() {
    let _lock = engine_lock();
    let env = env();
    // The hosts are Docker 20.10 engines of the script's own, whatever the engine under test.
    skip_on!(
        env,
        Docker26 | Docker28 | Podman | Podman5 | Podman58,
        "the hosts are the script's own Docker 20.10 engines"
    );
    let scratch = Scratch::new();
    let dir = scratch.dir.path().join("fleet");
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fleet-sim.sh"))
        .args(["3", "4"])
        .env("STOWAGE_BIN", env!("CARGO_BIN_EXE_stowage"))
        .env("FLEET_SIM_DIR", &dir)
        .env("FLEET_SPLAY", "5s")
        .env("FLEET_KEEP_SUMMARY", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fleet-sim failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.dir.path().join("summary.json")).unwrap(),
    )
    .unwrap();
    let at = |path: &str| summary.pointer(path).cloned().unwrap_or(Value::Null);
    // Every host ends with the same digests. The origin only ever serves the mirror: at most
    // once per host and object even when every host misses the cold mirror at once
    // (distribution's proxy does not merge concurrent misses; docs/fleet.md has the counts).
    assert_eq!(at("/boot/distinct_digest_sets"), 1, "{summary:#}");
    for phase in ["boot", "rollout_window", "rollout_mirror_back"] {
        let most = at(&format!("/{phase}/origin_max_per_object"))
            .as_u64()
            .unwrap_or(0);
        assert!((1..=2 * 3).contains(&most), "{phase}: {summary:#}");
        assert_eq!(
            at(&format!("/{phase}/origin_objects")),
            4 * 3,
            "{phase}: {summary:#}"
        );
    }
    // A rollout outside the window waits on every host, then starts at the opening.
    assert_eq!(at("/rollout_window/hosts_deferred"), 3, "{summary:#}");
    assert_eq!(at("/rollout_window/hosts_started"), 3, "{summary:#}");
    // The mirror gone mid-rollout: some hosts fell back, and all converged (the script fails
    // otherwise); back, it serves again.
    assert!(
        at("/rollout_mirror_back/mirror_gets").as_u64() > Some(0),
        "{summary:#}"
    );
    // The origin down: every host keeps its images and says why it cannot check.
    assert_eq!(at("/origin_down/hosts_kept_all"), 3, "{summary:#}");
    assert_eq!(at("/origin_down/hosts_reported_network"), 3, "{summary:#}");
}

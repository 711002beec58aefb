//! The test environment `scripts/test-env.sh up` started: which engine profile, its addresses,
//! and the lock that keeps tests touching the image store one at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The engine profiles of `scripts/test-env.sh` (`STOWAGE_TEST_ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineKind {
    /// Debian 12's Docker 20.10, classic image store.
    Docker20,
    /// Docker 26.1 with the containerd image store.
    Docker26,
    /// Docker 28.5 on containerd 2.1, containerd image store (chrooted in a Debian sid root).
    Docker28,
    /// Podman 4.3's Docker-compatible API.
    Podman,
    /// Podman 5.4 (Debian 13, chrooted), API 1.41.
    Podman5,
    /// Podman 5.8 (Debian sid, chrooted), API 1.44.
    Podman58,
}

impl EngineKind {
    /// Any Podman: the same compatible API, answering the same way where it differs from
    /// Docker's.
    pub(crate) fn is_podman(self) -> bool {
        matches!(
            self,
            EngineKind::Podman | EngineKind::Podman5 | EngineKind::Podman58
        )
    }

    /// Docker with the containerd image store.
    pub(crate) fn is_containerd(self) -> bool {
        matches!(self, EngineKind::Docker26 | EngineKind::Docker28)
    }
}

/// The profile the tests run against: `STOWAGE_TEST_ENGINE`, docker20 when unset.
pub(crate) fn engine_name() -> String {
    std::env::var("STOWAGE_TEST_ENGINE").unwrap_or_else(|_| "docker20".into())
}

/// Ends a test early, passing, with the reason printed, when it cannot apply to the engine
/// under test. Every such skip is listed in docs/reliability.md.
#[macro_export]
macro_rules! skip_on {
    ($env:expr, $($kind:ident)|+, $reason:expr) => {
        if matches!($env.engine, $($crate::support::EngineKind::$kind)|+) {
            eprintln!("SKIPPED on {:?}: {}", $env.engine, $reason);
            return;
        }
    };
}

/// The test environment's addresses, read from `$STOWAGE_TEST_ENV/env.ENGINE`.
pub(crate) struct Env {
    /// Which engine `docker_host` is.
    pub engine: EngineKind,
    pub docker_host: String,
    /// The engine that changes what the registries hold (see [`Env::seed_docker`]).
    pub seed_docker_host: String,
    pub plain: String,
    pub auth: String,
    pub mirror: String,
    pub user: String,
    pub password: String,
    pub plain_storage: PathBuf,
    pub plain_log: PathBuf,
    pub docker_cli: String,
    /// A minimal Debian root for installing the .deb into.
    pub debian_root: PathBuf,
    /// Debian 13's cosign binary, its home (config and cache), and the key pair (`.key`,
    /// `.pub`) that signed the seeded gamma:1 and multi:1.
    pub cosign: PathBuf,
    pub cosign_home: PathBuf,
    pub cosign_key: PathBuf,
    /// Debian sid's cosign 3 (a wrapper that runs it from its own root).
    pub cosign3: PathBuf,
    /// Podman 5's quadlet generator (from Debian 13), for the quadlet example.
    pub quadlet: PathBuf,
}

pub(crate) fn env() -> Env {
    let root = std::env::var("STOWAGE_TEST_ENV").unwrap_or_else(|_| "/tmp/stowage-test-env".into());
    let path = Path::new(&root).join(format!("env.{}", engine_name()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the integration tests need the real test environment; start it with \
             `scripts/test-env.sh up`",
            path.display()
        )
    });
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| {
        vars.get(k)
            .unwrap_or_else(|| panic!("{} has no {k}", path.display()))
            .to_string()
    };
    let engine = match get("STOWAGE_TEST_ENGINE").as_str() {
        "docker20" => EngineKind::Docker20,
        "docker26" => EngineKind::Docker26,
        "docker28" => EngineKind::Docker28,
        "podman" => EngineKind::Podman,
        "podman5" => EngineKind::Podman5,
        "podman58" => EngineKind::Podman58,
        other => panic!("{}: unknown STOWAGE_TEST_ENGINE {other}", path.display()),
    };
    Env {
        engine,
        docker_host: get("DOCKER_HOST"),
        seed_docker_host: get("STOWAGE_TEST_SEED_DOCKER_HOST"),
        plain: get("STOWAGE_TEST_PLAIN"),
        auth: get("STOWAGE_TEST_AUTH"),
        mirror: get("STOWAGE_TEST_MIRROR"),
        user: get("STOWAGE_TEST_USER"),
        password: get("STOWAGE_TEST_PASSWORD"),
        plain_storage: PathBuf::from(get("STOWAGE_TEST_PLAIN_STORAGE")),
        plain_log: PathBuf::from(get("STOWAGE_TEST_PLAIN_LOG")),
        docker_cli: get("DOCKER_CLI"),
        debian_root: PathBuf::from(get("STOWAGE_TEST_DEBIAN_ROOT")),
        cosign: PathBuf::from(get("STOWAGE_TEST_COSIGN")),
        cosign_home: PathBuf::from(get("STOWAGE_TEST_COSIGN_HOME")),
        cosign_key: PathBuf::from(get("STOWAGE_TEST_COSIGN_KEY")),
        cosign3: PathBuf::from(get("STOWAGE_TEST_COSIGN3")),
        quadlet: PathBuf::from(get("STOWAGE_TEST_QUADLET")),
    }
}

/// Tests that touch the engine's image store take this lock: they add and remove images, and
/// running them at once would make each other's assertions meaningless.
pub(crate) fn engine_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

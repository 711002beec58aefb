//! The library against the real engine: the engine layer's data, concurrency, mirrors.

// The engine lock only serialises tests (each runs on its own runtime and thread); holding it
// across awaits is the point.
#![allow(clippy::await_holding_lock)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use stowage::config::Config;
use stowage::converge::{InFlight, PullResult, Puller};
use stowage::credentials::CredentialSource;
use stowage::engine::docker::DockerEngine;
use stowage::engine::{Engine, LocalImage, PullRequest, Pulled};
use stowage::failure::Failure;
use tokio_util::sync::CancellationToken;

use crate::util::{engine_lock, env};

/// The real engine, counting how many pulls run at once.
struct Counting {
    inner: DockerEngine,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Engine for Counting {
    async fn list_images(&self) -> Result<Vec<LocalImage>, Failure> {
        self.inner.list_images().await
    }

    async fn pull(&self, request: &PullRequest) -> Result<Pulled, Failure> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        let result = self.inner.pull(request).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

fn puller<'a, E: Engine>(
    engine: &'a E,
    config: &'a Config,
    credentials: &'a CredentialSource,
) -> Puller<'a, E> {
    Puller {
        engine,
        settings: &config.pull,
        credentials,
        stop: CancellationToken::new(),
        in_flight: InFlight::default(),
    }
}

/// An empty Docker config, so no test depends on (or waits for a helper of) the developer's own.
fn no_credentials() -> (tempfile::TempDir, CredentialSource) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "{}").unwrap();
    let source = CredentialSource::new(Some(&path));
    (dir, source)
}

fn config(text: &str) -> Config {
    Config::parse(&PathBuf::from("test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_layer_reads_the_fields_we_rely_on() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("alpha:1");
    env.remove_images(std::slice::from_ref(&name));
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let pulled = engine
        .pull(&PullRequest {
            reference: name.parse().unwrap(),
            platform: None,
            auth: None,
        })
        .await
        .unwrap();
    // bollard 0.21.1 does not pin the API version (bollard #736): if the engine's answers ever
    // stop filling these, fail here, loudly, rather than mis-plan.
    assert!(pulled.updated);
    let digest = pulled.digest.expect("the engine reports the pulled digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    let images = engine.list_images().await.unwrap();
    let ours = images
        .iter()
        .find(|i| i.tags.contains(&name))
        .unwrap_or_else(|| panic!("{name} not listed with its tag: {images:#?}"));
    assert!(ours.id.starts_with("sha256:"), "{ours:?}");
    let repo = name.rsplit_once(':').unwrap().0;
    assert!(
        ours.digests.contains(&format!("{repo}@{digest}")),
        "{ours:?}"
    );
    env.remove_images(&[name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_by_the_config() {
    let _lock = engine_lock();
    let env = env();
    let names: Vec<String> = ["alpha:1", "alpha:2", "beta:1", "gamma:1", "busybox:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    env.remove_images(&names);
    let mut text = String::from("[pull]\nconcurrency = 2\n");
    for n in &names {
        text.push_str(&format!("[[image]]\nname = \"{n}\"\n"));
    }
    let config = config(&text);
    let engine = Counting {
        inner: DockerEngine::connect(Some(&env.docker_host)).await.unwrap(),
        now: Arc::default(),
        peak: Arc::default(),
    };
    let (_creds_dir, credentials) = no_credentials();
    let puller = puller(&engine, &config, &credentials);
    let outcomes = puller.converge(&config.images).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.result, PullResult::Pulled { .. })),
        "{outcomes:#?}"
    );
    assert_eq!(
        engine.peak.load(Ordering::SeqCst),
        2,
        "two pulls at once, never more"
    );
    // Outcomes come back in configuration order.
    let order: Vec<String> = outcomes
        .iter()
        .map(|o| o.decision.image.reference.to_string())
        .collect();
    assert_eq!(order, names);
    env.remove_images(&names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_mirror_serves_the_origin_images() {
    let _lock = engine_lock();
    let env = env();
    let name = format!("{}/stowage-test/beta:1", env.mirror);
    env.remove_images(std::slice::from_ref(&name));
    let config = config(&format!("[[image]]\nname = \"{name}\"\n"));
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let (_creds_dir, credentials) = no_credentials();
    let puller = puller(&engine, &config, &credentials);
    let outcomes = puller.converge(&config.images).await.unwrap();
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:#?}"
    );
    assert!(env.has_image(&name));
    env.remove_images(&[name]);
}

/// The real engine, except that the first image's pull waits until every other image is done.
struct FirstWaits {
    inner: DockerEngine,
    first: String,
    others_done: Arc<AtomicUsize>,
    others: usize,
}

impl Engine for FirstWaits {
    async fn list_images(&self) -> Result<Vec<LocalImage>, Failure> {
        self.inner.list_images().await
    }

    async fn pull(&self, request: &PullRequest) -> Result<Pulled, Failure> {
        if request.reference.to_string() == self.first {
            while self.others_done.load(Ordering::SeqCst) < self.others {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            return self.inner.pull(request).await;
        }
        let result = self.inner.pull(request).await;
        self.others_done.fetch_add(1, Ordering::SeqCst);
        result
    }
}

/// A slow first image must not hold the others to one slot: with concurrency 2, the other four
/// go through the second slot while the first is still pulling. (An ordered buffer would
/// deadlock here: it starts nothing new until the first result is taken.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_image_does_not_hold_up_the_others() {
    let _lock = engine_lock();
    let env = env();
    let names: Vec<String> = ["alpha:1", "alpha:2", "beta:1", "gamma:1", "busybox:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    env.remove_images(&names);
    let mut text = String::from("[pull]\nconcurrency = 2\n");
    for n in &names {
        text.push_str(&format!("[[image]]\nname = \"{n}\"\n"));
    }
    let config = config(&text);
    let engine = FirstWaits {
        inner: DockerEngine::connect(Some(&env.docker_host)).await.unwrap(),
        first: names[0].clone(),
        others_done: Arc::default(),
        others: names.len() - 1,
    };
    let (_creds_dir, credentials) = no_credentials();
    let puller = puller(&engine, &config, &credentials);
    let outcomes = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        puller.converge(&config.images),
    )
    .await
    .expect("the other images went through while the first one waited");
    let outcomes = outcomes.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.result, PullResult::Pulled { .. })),
        "{outcomes:#?}"
    );
    env.remove_images(&names);
}

//! The library against the real engine: the engine layer's data, concurrency, mirrors,
//! resolution of multi-platform indexes.

// The engine lock only serialises tests (each runs on its own runtime and thread); holding it
// across awaits is the point.
#![allow(clippy::await_holding_lock)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use stowage::Config;
use stowage::DockerEngine;
use stowage::Failure;
use stowage::{Engine, LocalImage, OnBytes, PullRequest, Pulled};
use stowage::{InFlight, PullResult, Session, Store};

use crate::support::{Background, engine_lock, env, fresh_repo};

/// A session over the given config text (pull settings first, then images), with no
/// credentials (never the developer's own, whose helper could prompt) and its state in a temp
/// dir.
async fn session<E: Engine>(engine: &E, text: &str) -> (tempfile::TempDir, Session) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("docker.json"), "{}").unwrap();
    let text =
        format!("[pull]\ncredentials = \"docker.json\"\n{text}\n[state]\nfile = \"state.json\"\n");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let session = Session::new(config, None, engine).await.unwrap();
    (dir, session)
}

/// Pull settings, then `[[image]]` tables for `names`.
fn images_toml(pull: &str, names: &[String]) -> String {
    let mut text = format!("{pull}\n");
    for n in names {
        text.push_str(&format!("[[image]]\nname = \"{n}\"\n"));
    }
    text
}

/// The real engine, counting how many pulls run at once.
struct Counting {
    inner: DockerEngine,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Engine for Counting {
    fn insecure_registries(&self) -> Option<stowage::EngineInsecure> {
        self.inner.insecure_registries()
    }

    async fn list_images(&self) -> Result<Vec<LocalImage>, Failure> {
        self.inner.list_images().await
    }

    async fn pull(&self, request: &PullRequest, bytes: &OnBytes<'_>) -> Result<Pulled, Failure> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        let result = self.inner.pull(request, bytes).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), Failure> {
        self.inner.tag(source, repo, tag).await
    }

    async fn platform(&self) -> Result<String, Failure> {
        self.inner.platform().await
    }
}

/// The real engine, except that the first image's pull waits until every other image is done.
struct FirstWaits {
    inner: DockerEngine,
    /// `registry/repository@` of the first image (pulls are by digest).
    first: String,
    others_done: Arc<AtomicUsize>,
    others: usize,
}

impl Engine for FirstWaits {
    fn insecure_registries(&self) -> Option<stowage::EngineInsecure> {
        self.inner.insecure_registries()
    }

    async fn list_images(&self) -> Result<Vec<LocalImage>, Failure> {
        self.inner.list_images().await
    }

    async fn pull(&self, request: &PullRequest, bytes: &OnBytes<'_>) -> Result<Pulled, Failure> {
        if request.reference.to_string().starts_with(&self.first) {
            while self.others_done.load(Ordering::SeqCst) < self.others {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            return self.inner.pull(request, bytes).await;
        }
        let result = self.inner.pull(request, bytes).await;
        self.others_done.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), Failure> {
        self.inner.tag(source, repo, tag).await
    }

    async fn platform(&self) -> Result<String, Failure> {
        self.inner.platform().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_layer_reads_the_fields_we_rely_on() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("alpha:1");
    env.remove_images(std::slice::from_ref(&name));
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let platform = engine.platform().await.unwrap();
    assert!(platform.starts_with("linux/"), "{platform}");
    // The registries it speaks plain HTTP to, which stowage follows: Docker's 127.0.0.0/8,
    // Podman's registries.conf (the test environment marks the loopback ports insecure).
    let insecure = engine
        .insecure_registries()
        .expect("the engine says its insecure registries");
    if env.engine.is_podman() {
        assert!(insecure.hosts.contains(&env.plain), "{insecure:?}");
    } else {
        let cidrs: Vec<String> = insecure.cidrs.iter().map(|c| c.to_string()).collect();
        assert!(cidrs.contains(&"127.0.0.0/8".to_owned()), "{insecure:?}");
    }
    let reported = std::sync::Mutex::new(Vec::new());
    let pulled = engine
        .pull(
            &PullRequest {
                reference: name.parse().unwrap(),
                platform: None,
                auth: None,
            },
            &|done, all| reported.lock().unwrap().push((done, all)),
        )
        .await
        .unwrap();
    // Bytes, where the engine reports them (layers already present report none).
    let reported = reported.into_inner().unwrap();
    for (done, all) in &reported {
        assert!(*all > 0 && done <= all, "{reported:?}");
    }
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

/// Whether the engine holds an image whole, the look after a race's pull back (Docker 28 can
/// name an image it holds without its layers): a pulled image is, and so is an image with no
/// layer at all (built `FROM scratch` with a label only); an ID the engine lacks is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_images_are_told_from_missing_ones() {
    let _lock = engine_lock();
    let env = env();
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let pulled = env.plain_image("beta:1");
    assert!(env.docker(&["pull", "-q", &pulled]).status.success());
    let repo = fresh_repo("layerless");
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM scratch\nLABEL org.stowage.test={repo}\n");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let layerless = format!("{}/stowage-test/{repo}:1", env.plain);
    let context = dir.path().display().to_string();
    let out = env.docker(&["build", "-q", "-t", &layerless, &context]);
    assert!(out.status.success(), "{out:?}");
    for name in [&pulled, &layerless] {
        let image = engine.image_named(name).await.unwrap().unwrap();
        assert!(engine.image_whole(&image.id).await.unwrap(), "{name}");
    }
    let missing = format!("sha256:{}", "0".repeat(64));
    assert!(!engine.image_whole(&missing).await.unwrap());
    env.remove_images(&[pulled, layerless]);
}

/// When the containers of an image were created, as the engine dates them: what tells a
/// container that raced a removal from one created after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_containers_of_an_image_are_dated() {
    let _lock = engine_lock();
    let env = env();
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let name = env.plain_image("gamma:1");
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    let id = env.image_id(&name).unwrap();
    let _ = env.docker(&["rm", "-f", "stowage-dated"]);
    let before = chrono::Utc::now().timestamp();
    let out = env.docker(&[
        "create",
        "--name",
        "stowage-dated",
        &id,
        "/bin/busybox",
        "true",
    ]);
    assert!(out.status.success(), "{out:?}");
    let after = chrono::Utc::now().timestamp();
    let created = engine.containers_created(&id).await.unwrap();
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(
        (before - 1..=after).contains(&created[0]),
        "{before} {created:?} {after}"
    );
    let none = engine
        .containers_created(&format!("sha256:{}", "0".repeat(64)))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let _ = env.docker(&["rm", "-f", "stowage-dated"]);
    env.remove_images(&[name]);
}

/// A tag and its owner's untag, as the engine's events tell them: the image's ID and the name
/// given, on every engine; on Podman the untag names the name too. A prune on Podman follows
/// names by these to find one the engine deleted with the image (docs/reliability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_say_which_name_a_tag_gave_and_took() {
    use futures_util::StreamExt;
    use stowage::{ImageStore, StoreEvent};
    let _lock = engine_lock();
    let env = env();
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let name = env.plain_image("gamma:1");
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    let id = env.image_id(&name).unwrap();
    let given = "localhost/stowage-events:given";
    let events = engine.store_events(chrono::Utc::now().timestamp() - 1);
    let mut events = std::pin::pin!(events);
    assert!(env.docker(&["tag", &name, given]).status.success());
    assert!(env.docker(&["rmi", given]).status.success());
    let (mut named, mut unnamed) = (None, None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while named.is_none() || unnamed.is_none() {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await else {
            break;
        };
        match event.unwrap() {
            StoreEvent::Named { id: to, name, .. } if name.as_deref() == Some(given) => {
                named = Some(to);
            }
            StoreEvent::Unnamed { id: from, name, .. } if from == id && named.is_some() => {
                unnamed = Some(name);
            }
            _ => {}
        }
    }
    assert_eq!(named.as_deref(), Some(id.as_str()), "the tag's event");
    let unnamed = unnamed.expect("the untag's event");
    if engine.image_store() == ImageStore::Podman {
        assert_eq!(unnamed.as_deref(), Some(given));
    }
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
    let engine = Counting {
        inner: DockerEngine::connect(Some(&env.docker_host)).await.unwrap(),
        now: Arc::default(),
        peak: Arc::default(),
    };
    let (_dir, session) = session(&engine, &images_toml("concurrency = 2", &names)).await;
    let puller = session.puller(
        &engine,
        stowage::Shutdown::new(),
        InFlight::default(),
        stowage::PinUpkeep::Command,
    );
    let outcomes = puller.converge(&session.pinned).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.result, PullResult::Pulled { .. })),
        "{outcomes:#?}"
    );
    assert!(
        engine.peak.load(Ordering::SeqCst) <= 2,
        "never more than two pulls at once"
    );
    // Outcomes come back in configuration order.
    let order: Vec<String> = outcomes
        .iter()
        .map(|o| o.decision.reference().to_string())
        .collect();
    assert_eq!(order, names);
    env.remove_images(&names);
}

/// A slow first image must not hold the others to one slot: with concurrency 2, the other four
/// go through the second slot while the first is still pulling. (An ordered buffer would
/// deadlock here: it starts nothing new until the first result is taken.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_image_does_not_hold_up_the_others() {
    let _lock = engine_lock();
    let env = env();
    let names: Vec<String> = ["busybox:1", "alpha:1", "alpha:2", "beta:1", "gamma:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    env.remove_images(&names);
    let engine = FirstWaits {
        inner: DockerEngine::connect(Some(&env.docker_host)).await.unwrap(),
        first: format!("{}@", names[0].rsplit_once(':').unwrap().0),
        others_done: Arc::default(),
        others: names.len() - 1,
    };
    let (_dir, session) = session(&engine, &images_toml("concurrency = 2", &names)).await;
    let puller = session.puller(
        &engine,
        stowage::Shutdown::new(),
        InFlight::default(),
        stowage::PinUpkeep::Command,
    );
    let outcomes = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        puller.converge(&session.pinned),
    )
    .await
    .expect("the other images went through while the first one waited")
    .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.result, PullResult::Pulled { .. })),
        "{outcomes:#?}"
    );
    env.remove_images(&names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_mirror_serves_the_origin_images() {
    let _lock = engine_lock();
    let env = env();
    let name = format!("{}/stowage-test/beta:1", env.mirror);
    env.remove_images(std::slice::from_ref(&name));
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let (_dir, session) = session(&engine, &images_toml("", std::slice::from_ref(&name))).await;
    let puller = session.puller(
        &engine,
        stowage::Shutdown::new(),
        InFlight::default(),
        stowage::PinUpkeep::Command,
    );
    let outcomes = puller.converge(&session.pinned).await.unwrap();
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:#?}"
    );
    assert!(env.has_image(&name));
    env.remove_images(&[name]);
}

/// A multi-platform index resolves to the manifest of the host's platform (or the one asked
/// for), never to the index digest: the digest a pull by digest records locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_platform_index_resolves_to_the_platform_digest() {
    let env = env();
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let (_dir, session) = session(&engine, &images_toml("", &[env.plain_image("multi:1")])).await;
    let resolver = stowage::Resolver::new(
        &session.config,
        session.credentials.clone(),
        engine.platform().await.unwrap(),
        std::sync::Arc::default(),
        stowage::Engine::insecure_registries(&engine),
    );
    let manifest_digest = |repo_tag: &str| {
        let image: stowage::ImageRef = env.plain_image(repo_tag).parse().unwrap();
        let resolver = &resolver;
        async move { resolver.resolve(&image, None).await.unwrap() }
    };
    let amd64 = manifest_digest("multi-amd64:1").await;
    let arm64 = manifest_digest("multi-arm64:1").await;
    assert_eq!(amd64.index, None, "a single-platform image has no index");
    let multi: stowage::ImageRef = env.plain_image("multi:1").parse().unwrap();
    let host = resolver.resolve(&multi, None).await.unwrap();
    let host_platform = engine.platform().await.unwrap();
    let expected = if host_platform == "linux/arm64" {
        &arm64
    } else {
        &amd64
    };
    assert_eq!(host.digest, expected.digest, "resolved for {host_platform}");
    let index = host.index.expect("multi:1 is an index");
    assert_ne!(index, host.digest);
    let arm = resolver.resolve(&multi, Some("linux/arm64")).await.unwrap();
    assert_eq!(arm.digest, arm64.digest);
    let none = resolver
        .resolve(&multi, Some("linux/s390x"))
        .await
        .unwrap_err();
    assert_eq!(none.class, stowage::FailureClass::NotFound);
    // The whole entry, as `stowage pin` writes it: the index and both platforms.
    let entry = resolver.resolve_entry(&multi).await.unwrap();
    assert_eq!(entry.digest, index);
    assert_eq!(entry.platforms.get("linux/arm64"), Some(&arm64.digest));
    assert_eq!(entry.platforms.get("linux/amd64"), Some(&amd64.digest));
}

/// Podman 4.3 and Docker 26's containerd store failed a whole listing of the images when one
/// went while it was made ("image not known", "content digest ...: not found"): a prune cycle
/// listing the store, or planning again, while images are removed failed with it. The listing is made again. Reproduced by removing many images at once, as a
/// prune does: 6 of 40 listings failed on Podman 4.3 while one `rmi` removed 30 images, and with
/// 16 images here, runs without the retry failed within 20 s each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_listed_while_they_go() {
    use stowage::Store;
    let _lock = engine_lock();
    let env = env();
    // Local images, built once and loaded again each round: a load is one request.
    let images: Vec<String> = (0..16)
        .map(|i| format!("stowage-local/going{i}:1"))
        .collect();
    for (i, image) in images.iter().enumerate() {
        env.build_image(
            image,
            "scratch",
            &format!("going {i}"),
            Some("org.stowage.test=1"),
        );
    }
    let saved = tempfile::tempdir().unwrap();
    let archive = saved.path().join("images.tar").display().to_string();
    let save: Vec<&str> = ["save", "-o", archive.as_str()]
        .into_iter()
        .chain(images.iter().map(String::as_str))
        .collect();
    assert!(env.docker(&save).status.success());
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let churn = {
        let images = images.clone();
        Background::run(move |env| {
            let rmi: Vec<&str> = std::iter::once("rmi")
                .chain(images.iter().map(String::as_str))
                .collect();
            let removed = env.docker(&rmi).status.success();
            assert!(env.docker(&["load", "-q", "-i", &archive]).status.success());
            // A prune's removals come in batches with pauses; an unbroken storm of them can fail
            // Podman 4.3's listings for longer than the retry's 10 s.
            std::thread::sleep(std::time::Duration::from_millis(500));
            removed
        })
    };
    let mut listings = 0;
    let started = std::time::Instant::now();
    while listings < 40 || (started.elapsed().as_secs() < 20 && listings < 200) {
        engine.store().await.unwrap_or_else(|f| panic!("{f}"));
        listings += 1;
    }
    let removed = churn.stop();
    env.remove_images(&images);
    assert!(
        removed > 0,
        "no image went while {listings} listings were made"
    );
}

/// The containers' images are listed while containers come and go: Podman says `stopped` of
/// one that has just exited (a state Docker's API has no word for), in its list every few
/// polls; one listing that cannot read it would fail a prune cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_listed_while_they_come_and_go() {
    use stowage::Store;
    let _lock = engine_lock();
    let env = env();
    let image = env.plain_image("busybox:1");
    assert!(env.docker(&["pull", "-q", &image]).status.success());
    let id = env.image_id(&image).unwrap();
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let runner = Background::run(move |env| {
        let args = [
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "/bin/busybox",
            "true",
        ];
        assert!(env.docker(&args).status.success());
        true
    });
    let mut seen = 0;
    for _ in 0..200 {
        let used = engine
            .container_images()
            .await
            .unwrap_or_else(|f| panic!("{f}"));
        seen += usize::from(used.contains(&id));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let runs = runner.stop();
    assert!(runs > 0 && seen > 0, "{runs} runs, seen in {seen} listings");
}

//! Shared helpers for the integration tests: the real test environment started by
//! `scripts/test-env.sh up` (a hermetic dockerd and three registries on loopback), the stowage
//! binary, and a throttling TCP proxy that turns a loopback registry into a slow one.

#![allow(dead_code)] // each test module uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The engine profiles of `scripts/test-env.sh` (`STOWAGE_TEST_ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineKind {
    /// Debian 12's Docker 20.10, classic image store.
    Docker20,
    /// Docker 26.1 with the containerd image store.
    Docker26,
    /// Podman 4.3's Docker-compatible API.
    Podman,
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
        if matches!($env.engine, $($crate::util::EngineKind::$kind)|+) {
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
        "podman" => EngineKind::Podman,
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
    }
}

/// Tests that touch the engine's image store take this lock: they add and remove images, and
/// running them at once would make each other's assertions meaningless.
pub(crate) fn engine_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Env {
    /// A fully qualified name in the plain registry.
    pub(crate) fn plain_image(&self, repo_tag: &str) -> String {
        format!("{}/stowage-test/{repo_tag}", self.plain)
    }

    /// Runs the Debian docker CLI against the hermetic engine.
    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        self.docker_on(&self.docker_host, args)
    }

    /// Runs the Debian docker CLI against the engine at `host`.
    fn docker_on(&self, host: &str, args: &[&str]) -> Output {
        Command::new(&self.docker_cli)
            .args(args)
            .env("DOCKER_HOST", host)
            // Never the user's ~/.docker: logins made by tests stay in the test environment.
            .env(
                "DOCKER_CONFIG",
                std::env::temp_dir().join("stowage-tests-cli"),
            )
            .output()
            .expect("the docker CLI runs")
    }

    /// Uses `image` without any pull: runs `/bin/busybox true` in a throw-away container, or,
    /// on Podman (whose containers cannot start on these machines: a process rlimit), only
    /// creates it. Either way the engine must find the image locally, and records a container
    /// event for it. The container is gone when this returns (not `run --rm`, whose removal
    /// the engine does later: removing the image meanwhile would take it from under a
    /// container, which Docker 26's containerd store does not recover from cleanly).
    pub(crate) fn use_image(&self, image: &str) -> Output {
        let created = self.docker(&[
            "create",
            "--pull=never",
            "--network",
            "none",
            image,
            "/bin/busybox",
            "true",
        ]);
        if !created.status.success() {
            return created;
        }
        let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
        let used = if self.engine == EngineKind::Podman {
            created
        } else {
            self.docker(&["start", "-a", &id])
        };
        let _ = self.docker(&["rm", "-f", &id]);
        used
    }

    /// Runs the Debian docker CLI against the seed engine (Docker 20.10), which changes what
    /// the registries hold: Podman re-compresses layers on push, so what it pushes would not
    /// keep the source's digests.
    pub(crate) fn seed_docker(&self, args: &[&str]) -> Output {
        self.docker_on(&self.seed_docker_host, args)
    }

    /// Pushes a new image of `mib` MiB of random bytes to the plain registry, built by the seed
    /// engine, and returns its repository (`stowage-test/<fresh>`, tag `1`). No engine has
    /// its layer yet, so a pull of it really transfers (Docker 26's containerd store keeps the
    /// blobs of removed images, which makes a seeded image's pull instant after the first).
    pub(crate) fn fresh_image(&self, mib: usize) -> String {
        let repo = format!("stowage-test/{}", fresh_repo("fresh"));
        let name = format!("{}/{repo}:1", self.plain);
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut bytes = vec![0u8; mib * 1024 * 1024];
        let mut state = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        for b in &mut bytes {
            // xorshift: incompressible enough that the throttle sees every byte.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        std::fs::write(dir.path().join("data.bin"), &bytes).expect("a temp file");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY data.bin /data.bin\n",
        )
        .expect("a temp file");
        let path = dir.path().display().to_string();
        for args in [
            vec!["build", "-q", "-t", name.as_str(), path.as_str()],
            vec!["push", "-q", name.as_str()],
            vec!["image", "rm", name.as_str()],
        ] {
            let out = Command::new(&self.docker_cli)
                .args(&args)
                .env("DOCKER_HOST", &self.seed_docker_host)
                .env("DOCKER_BUILDKIT", "0")
                .env(
                    "DOCKER_CONFIG",
                    std::env::temp_dir().join("stowage-tests-cli"),
                )
                .output()
                .expect("the docker CLI runs");
            assert!(out.status.success(), "docker {args:?}: {out:?}");
        }
        repo
    }

    /// Whether the seed engine is the engine under test.
    fn seeds_itself(&self) -> bool {
        self.seed_docker_host == self.docker_host
    }

    /// Points `repo_tag` in the plain registry at the content of `source` (another plain
    /// image): a tag that moves, as release tags do. Leaves the engine's store as it was.
    pub(crate) fn point_tag(&self, repo_tag: &str, source: &str) {
        let src = self.plain_image(source);
        let dst = self.plain_image(repo_tag);
        self.publish(&src, &dst);
    }

    /// Makes the registry name `dst` point at the content of the registry name `src`, through
    /// the seed engine. Leaves the engine under test's store as it was.
    pub(crate) fn publish(&self, src: &str, dst: &str) {
        let same = self.seeds_itself();
        let had = same && self.has_image(src);
        let dst_before = if same { self.image_id(dst) } else { None };
        for args in [vec!["pull", src], vec!["tag", src, dst], vec!["push", dst]] {
            let out = self.seed_docker(&args);
            assert!(out.status.success(), "docker {args:?}: {out:?}");
        }
        // Put the local name back where it was: only the registry's tag moves.
        match dst_before {
            Some(id) => assert!(self.seed_docker(&["tag", &id, dst]).status.success()),
            None => {
                let _ = self.seed_docker(&["image", "rm", dst]);
            }
        }
        if !had {
            let _ = self.seed_docker(&["image", "rm", src]);
        }
    }

    /// Makes `repo_tag`'s content (a plain image) present as a dangling image: pulled by digest
    /// only, with no tag. Returns the `repository@digest` it is known by.
    pub(crate) fn dangling_image(&self, repo_tag: &str) -> String {
        let name = self.plain_image(repo_tag);
        assert!(self.docker(&["pull", "-q", &name]).status.success());
        let by_digest = self.repo_digests(&name)[0].clone();
        self.purge_images(std::slice::from_ref(&name));
        assert!(self.docker(&["pull", "-q", &by_digest]).status.success());
        by_digest
    }

    /// The digests an image name's content is known by locally (`RepoDigests`).
    pub(crate) fn repo_digests(&self, name: &str) -> Vec<String> {
        let out = self.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            name,
        ]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// The plain registry's access-log lines (`"METHOD /v2/..."`), from line `from` on.
    pub(crate) fn plain_requests(&self, from: usize) -> Vec<String> {
        // The registry writes a request's line as it completes; let the last ones land.
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&self.plain_log).expect("the registry log");
        text.lines()
            .skip(from)
            .filter_map(|l| {
                let start = l.find("\"HEAD /v2").or_else(|| l.find("\"GET /v2"))?;
                let rest = &l[start + 1..];
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    }

    /// The number of lines in the plain registry's log now, to count requests after it.
    pub(crate) fn plain_log_mark(&self) -> usize {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&self.plain_log)
            .expect("the registry log")
            .lines()
            .count()
    }

    /// The ID of the image a name points at, if any.
    pub(crate) fn image_id(&self, name: &str) -> Option<String> {
        let out = self.docker(&["image", "inspect", "--format", "{{.Id}}", name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Removes the images these names point at, under every name and digest they have, and
    /// first the containers that use them: Docker 26's containerd store, made to remove an image
    /// a container uses, can later leave a new pull of it out of its image list.
    pub(crate) fn purge_images(&self, names: &[String]) {
        for n in names {
            if let Some(id) = self.image_id(n) {
                let users = self.docker(&["ps", "-aq", "--filter", &format!("ancestor={id}")]);
                for c in String::from_utf8_lossy(&users.stdout).split_whitespace() {
                    let _ = self.docker(&["rm", "-f", c]);
                }
                let _ = self.docker(&["image", "rm", "-f", &id]);
            }
        }
    }

    /// Whether the engine has an image by this name.
    pub(crate) fn has_image(&self, name: &str) -> bool {
        self.docker(&["image", "inspect", name]).status.success()
    }

    /// Removes images by name, ignoring the ones that are not there. As on Docker's classic
    /// store, the last tag takes the image with it: the containerd store and Podman keep an
    /// image pulled by digest under its `name@digest` after its tag is gone.
    pub(crate) fn remove_images(&self, names: &[String]) {
        for n in names {
            // The same content held only by digest (pulled by digest and never named, or left
            // by the tag's removal) counts as the image too.
            if let Some(by_digest) = self.plain_digest_name(n)
                && let Some(id) = self.image_id(&by_digest)
                && self.tags_of(&id).is_empty()
            {
                let _ = self.docker(&["image", "rm", "-f", &id]);
            }
            let id = self.image_id(n);
            let _ = self.docker(&["image", "rm", "-f", n]);
            if let Some(id) = id
                && self.has_image(&id)
                && self.tags_of(&id).is_empty()
            {
                let _ = self.docker(&["image", "rm", "-f", &id]);
            }
        }
    }

    /// `repository@digest` of a `repository:tag` of the plain registry, read from its storage
    /// (no request that would show in its access log); `None` for other names.
    pub(crate) fn plain_digest_name(&self, name: &str) -> Option<String> {
        let path = name.strip_prefix(&format!("{}/", self.plain))?;
        let (repo, tag) = path.rsplit_once(':')?;
        let link = self
            .plain_storage
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        let digest = std::fs::read_to_string(link).ok()?;
        Some(format!("{}/{repo}@{}", self.plain, digest.trim()))
    }

    /// The tags of an image (not its `name@digest` names, which some engines list as tags).
    pub(crate) fn tags_of(&self, name: &str) -> Vec<String> {
        let out = self.docker(&["image", "inspect", "--format", "{{json .RepoTags}}", name]);
        let tags: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        tags.into_iter().filter(|t| !t.contains('@')).collect()
    }

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

/// A created (never started) container: it holds its image. Removed when dropped, whatever the
/// test's outcome, so it never holds an image for the next test.
pub(crate) struct Container<'a> {
    env: &'a Env,
    pub id: String,
}

impl Container<'_> {
    /// Removes it now (not forced: it never ran).
    pub(crate) fn remove(self) {
        let out = self.env.docker(&["rm", &self.id]);
        assert!(out.status.success(), "docker rm: {out:?}");
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.env.docker(&["rm", "-f", &self.id]);
    }
}

impl Env {
    /// Creates a container from `image`.
    pub(crate) fn create_container(&self, image: &str) -> Container<'_> {
        let out = self.docker(&["create", image, "true"]);
        assert!(out.status.success(), "docker create {image}: {out:?}");
        Container {
            env: self,
            id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }
}

/// A temporary directory holding a config file.
pub(crate) struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("writable temp dir");
        p
    }

    /// A config that requires `images` and prunes by `prune` (the lines of its `[prune]`
    /// table), loaded, with its prune settings.
    pub(crate) fn prune_config(
        &self,
        images: &[String],
        prune: &str,
    ) -> (stowage::Config, stowage::PruneSettings) {
        let path = self.config("", images);
        let text = std::fs::read_to_string(&path).expect("the config") + "[prune]\n" + prune;
        std::fs::write(&path, text).expect("writable temp dir");
        let config = stowage::Config::load(&path).expect("a valid config");
        let settings = config.prune.clone().expect("a [prune] table");
        (config, settings)
    }

    /// A config with fast retries, no splay, `pull_extra` lines in `[pull]`, and the given
    /// `[[image]]` names.
    pub(crate) fn config(&self, pull_extra: &str, images: &[String]) -> PathBuf {
        let mut text = String::from("[pull]\n");
        // Test defaults: no splay and quick retries, unless the test sets the key itself.
        for (key, value) in [
            ("splay", "\"0s\""),
            ("backoff", "\"100ms\""),
            ("backoff_max", "\"500ms\""),
            ("retries", "1"),
        ] {
            if !pull_extra
                .lines()
                .any(|l| l.starts_with(&format!("{key} =")))
            {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text.push_str(pull_extra);
        text.push('\n');
        // Never the system's /var/lib/stowage: each test keeps its own state.
        text.push_str(&format!(
            "[state]\nfile = \"{}\"\n",
            self.dir.path().join("state.json").display()
        ));
        for i in images {
            text.push_str(&format!("[[image]]\nname = \"{i}\"\n"));
        }
        self.write("config.toml", &text)
    }
}

/// The ports test registries and throttling proxies take, so that engines needing to be told
/// which plain-HTTP registries to trust (Podman's registries.conf) can list them all; keep in
/// step with `TEST_REGISTRY_PORTS` in scripts/test-env.sh.
pub(crate) const TEST_REGISTRY_PORTS: std::ops::Range<u16> = 5110..5200;

/// `GET path` over plain HTTP/1.1; the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).expect("an HTTP answer")
}

/// [`http_get`], or `None` when nothing answers (a server still starting).
pub(crate) fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A free loopback port from [`TEST_REGISTRY_PORTS`] (bound then released; good enough on a
/// test machine, and the bound listener is returned for callers that keep it).
pub(crate) fn bind_registry_port() -> TcpListener {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Round robin from a per-process start, so released ports are not handed out again at once.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = TEST_REGISTRY_PORTS.end - TEST_REGISTRY_PORTS.start;
    let seed = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    for _ in 0..span {
        let offset = (NEXT.fetch_add(1, Ordering::Relaxed) + seed) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", TEST_REGISTRY_PORTS.start + offset)) {
            return l;
        }
    }
    panic!("no free port in {TEST_REGISTRY_PORTS:?}")
}

/// A free loopback port for a registry (see [`bind_registry_port`]), released.
pub(crate) fn free_port() -> u16 {
    bind_registry_port()
        .local_addr()
        .expect("a bound port")
        .port()
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

/// A TCP proxy on a loopback port that forwards to `upstream`, sending the upstream's answers
/// at most `bytes_per_sec`: a registry that is slow, as a real one across a WAN can be.
pub(crate) struct Throttle {
    pub port: u16,
    runtime: tokio::runtime::Runtime,
}

impl Throttle {
    pub(crate) fn start(upstream: &str, bytes_per_sec: usize) -> Throttle {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(async {
                let listener = bind_registry_port();
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            })
            .expect("bind");
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.to_owned();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let chunk = (bytes_per_sec / 20).max(1);
                    let mut buf = vec![0u8; chunk];
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    loop {
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    up.abort();
                });
            }
        });
        Throttle { port, runtime }
    }
}

/// A registry of a test's own on `127.0.0.1:port`, that the test can stop (by dropping it).
pub(crate) struct Registry {
    child: Child,
    /// Its log, access lines included.
    pub log: PathBuf,
}

impl Registry {
    /// Serves `storage` (e.g. the plain registry's, read-only in practice), or, with `proxy`,
    /// is a pull-through cache of that registry with its own storage. With `wait`, returns once
    /// it accepts connections.
    pub(crate) fn start(
        dir: &Path,
        port: u16,
        storage: &Path,
        proxy: Option<&str>,
        wait: bool,
    ) -> Registry {
        let config = dir.join(format!("registry-{port}.yml"));
        let proxy = proxy
            .map(|p| format!("proxy:\n  remoteurl: http://{p}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{proxy}",
                storage.display()
            ),
        )
        .expect("writable temp dir");
        let log = dir.join(format!("registry-{port}.log"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("writable temp dir"))
            .spawn()
            .expect("docker-registry starts");
        if wait {
            let up = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            assert!(up, "the test registry on port {port} did not start");
        }
        Registry { child, log }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository name no other test (or earlier run) has used: `prefix-<nanoseconds>`.
pub(crate) fn fresh_repo(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!("{prefix}-{nanos}")
}

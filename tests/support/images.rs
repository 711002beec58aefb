//! Arranging the engine's image store and the registries through the docker CLI: publishing,
//! pointing tags, using and removing images, reading what the engine has.

use std::process::{Command, Output};

use super::env::Env;
use super::net::fresh_repo;
use std::time::Duration;

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
            // The classic builder: no buildx plugin, and parents recorded as stowage sees them.
            .env("DOCKER_BUILDKIT", "0")
            // Never the user's ~/.docker: logins made by tests stay in the test environment.
            .env(
                "DOCKER_CONFIG",
                std::env::temp_dir().join("stowage-tests-cli"),
            )
            .output()
            .expect("the docker CLI runs")
    }

    /// Uses `image` without any pull: runs `/bin/busybox true` in a throw-away container, or,
    /// on Podman, only creates it (a created container is a use there too; its containers
    /// start here since the test environment gives them the sandbox's rlimits, but the tests
    /// written before that were not changed). Either way the engine must find the image locally, and records a container
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
        let used = if self.engine.is_podman() {
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
        // Each call its own bytes (and so its own digest): seeded by the clock too, not only
        // by the process, or two fresh images of one test would be one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos() as u64;
        let mut state = (std::process::id() as u64 ^ nanos ^ 0x9e37_79b9_7f4a_7c15) | 1;
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
            let out = self.seed_docker(&args);
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
        self.plain_requests_from(from, |_| true)
    }

    /// The requests stowage itself made (its `stowage/` user agent) in the plain registry's
    /// access log from line `from` on, as `"METHOD /v2/..."`; the engine's are left out.
    pub(crate) fn plain_requests_by_stowage(&self, from: usize) -> Vec<String> {
        self.plain_requests_from(from, |l| l.contains("\" \"stowage/"))
    }

    /// The requests an engine made (Docker's `docker/` or Podman's `containers/` user agent)
    /// in the plain registry's access log from line `from` on, as `"METHOD /v2/..."`: neither
    /// stowage's nor a pull-through mirror's.
    pub(crate) fn plain_requests_by_engine(&self, from: usize) -> Vec<String> {
        self.plain_requests_from(from, |l| {
            l.contains("\" \"docker/") || l.contains("\" \"containers/")
        })
    }

    /// The `"METHOD /v2/..."` of each access-log line from line `from` on that `wanted` keeps.
    fn plain_requests_from(&self, from: usize, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        // The registry writes a request's line as it completes; let the last ones land.
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&self.plain_log).expect("the registry log");
        text.lines()
            .skip(from)
            .filter(|l| wanted(l))
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

    /// Builds `tag` on the engine under test with the classic builder (which records parents):
    /// `FROM from`, one file of `content`, and `label` (`key=value`) if given. Returns its ID.
    pub(crate) fn build_image(
        &self,
        tag: &str,
        from: &str,
        content: &str,
        label: Option<&str>,
    ) -> String {
        self.try_build_image(tag, from, content, label)
            .unwrap_or_else(|out| panic!("docker build {tag}: {out:?}"))
    }

    /// [`Env::build_image`], or the CLI's output when the build fails (a prune with
    /// `min_age = "0s"` may remove a build's intermediate image under it, as `docker image
    /// prune` may).
    pub(crate) fn try_build_image(
        &self,
        tag: &str,
        from: &str,
        content: &str,
        label: Option<&str>,
    ) -> Result<String, Output> {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("f.txt"), content).expect("a temp file");
        let file = tag.replace([':', '/'], "_");
        let mut dockerfile = format!("FROM {from}\nCOPY f.txt /{file}.txt\n");
        if let Some(label) = label {
            dockerfile.push_str(&format!("LABEL {label}\n"));
        }
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("a temp file");
        let path = dir.path().display().to_string();
        let out = self.docker(&["build", "-q", "-t", tag, &path]);
        if !out.status.success() {
            return Err(out);
        }
        // The ID the build printed (Podman's without `sha256:`): a prune running meanwhile may
        // already have removed the tag.
        let id = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("docker build -q prints the ID")
            .trim()
            .to_owned();
        Ok(if id.starts_with("sha256:") {
            id
        } else {
            format!("sha256:{id}")
        })
    }
}

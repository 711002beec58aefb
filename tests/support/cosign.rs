//! Signing images in the test registries with cosign itself (Debian 13's 2.5): key pairs,
//! signatures, and a signature taken away again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::env::Env;

impl Env {
    /// The public key that signed the seeded gamma:1 and multi:1.
    pub(crate) fn cosign_pub(&self) -> PathBuf {
        self.cosign_key.with_extension("pub")
    }

    /// cosign with `args`: no password on keys, no transparency log, its own home.
    fn cosign(&self, args: &[&str]) -> Output {
        Command::new(&self.cosign)
            .args(args)
            .env("HOME", &self.cosign_home)
            .env("DOCKER_CONFIG", &self.cosign_home)
            .env("COSIGN_PASSWORD", "")
            .output()
            .expect("cosign runs")
    }

    /// A new key pair `DIR/NAME.key` and `.pub`; returns `DIR/NAME`.
    pub(crate) fn cosign_key_pair(&self, dir: &Path, name: &str) -> PathBuf {
        let prefix = dir.join(name);
        let out = self.cosign(&[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().expect("a UTF-8 path"),
        ]);
        assert!(out.status.success(), "cosign generate-key-pair: {out:?}");
        prefix
    }

    /// Signs `image` (a plain-registry name, by tag or digest) with the key pair `prefix`, as
    /// `cosign sign --key` does: the digest the name has now is what is signed.
    pub(crate) fn cosign_sign(&self, prefix: &Path, image: &str) {
        let key = prefix.with_extension("key");
        let out = self.cosign(&[
            "sign",
            "--key",
            key.to_str().expect("a UTF-8 path"),
            "--tlog-upload=false",
            "--yes",
            image,
        ]);
        assert!(out.status.success(), "cosign sign {image}: {out:?}");
    }

    /// Whether cosign itself verifies `image` with the public key `prefix.pub`, offline.
    pub(crate) fn cosign_verifies(&self, prefix: &Path, image: &str) -> bool {
        let key = prefix.with_extension("pub");
        self.cosign(&[
            "verify",
            "--key",
            key.to_str().expect("a UTF-8 path"),
            "--insecure-ignore-tlog=true",
            image,
        ])
        .status
        .success()
    }

    /// Takes the signatures of `repo@digest` out of the plain registry (its `.sig` tag), as a
    /// registry clean-up or a rebuilt registry would.
    pub(crate) fn drop_signature(&self, repo: &str, digest: &str) {
        let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        let dir = self
            .plain_storage
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag);
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
}

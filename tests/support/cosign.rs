//! Signing images in the test registries with cosign itself: Debian 13's 2.5 (the legacy
//! `.sig` layout) and Debian sid's 3.1 (Sigstore bundles as OCI referrers by default, the
//! legacy layout with `--new-bundle-format=false`). Key pairs, signatures, attestations, and a
//! signature taken away again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::env::Env;

/// Which cosign signs, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signer {
    /// cosign 2.5: the legacy `sha256-<hex>.sig` layout.
    Cosign2,
    /// cosign 3 as a new user runs it: a bundle, as a referrer (the fallback tag
    /// `sha256-<hex>` on distribution, which has no referrers API).
    Cosign3,
    /// cosign 3 with `--new-bundle-format=false`: the legacy layout again.
    Cosign3Legacy,
}

/// What cosign 3 needs to sign offline with a key, against loopback registries.
const COSIGN3_OFFLINE: &[&str] = &[
    "--use-signing-config=false",
    "--tlog-upload=false",
    "--allow-http-registry",
    "--allow-insecure-registry",
];

impl Env {
    /// The public key that signed the seeded gamma:1 and multi:1.
    pub(crate) fn cosign_pub(&self) -> PathBuf {
        self.cosign_key.with_extension("pub")
    }

    /// `signer`'s cosign with `args`: no password on keys, no transparency log, its own home.
    fn cosign_as(&self, signer: Signer, args: &[&str]) -> Output {
        let binary = match signer {
            Signer::Cosign2 => &self.cosign,
            Signer::Cosign3 | Signer::Cosign3Legacy => &self.cosign3,
        };
        Command::new(binary)
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
        let out = self.cosign_as(
            Signer::Cosign2,
            &[
                "generate-key-pair",
                "--output-key-prefix",
                prefix.to_str().expect("a UTF-8 path"),
            ],
        );
        assert!(out.status.success(), "cosign generate-key-pair: {out:?}");
        prefix
    }

    /// Signs `image` (a plain-registry name, by tag or digest) with the key pair `prefix`, as
    /// `cosign sign --key` does: the digest the name has now is what is signed.
    pub(crate) fn cosign_sign(&self, prefix: &Path, image: &str) {
        self.cosign_sign_as(Signer::Cosign2, prefix, image);
    }

    /// Signs `image` with the key pair `prefix`, as `signer` does.
    pub(crate) fn cosign_sign_as(&self, signer: Signer, prefix: &Path, image: &str) {
        let key = prefix.with_extension("key");
        let mut args = vec![
            "sign",
            "--key",
            key.to_str().expect("a UTF-8 path"),
            "--yes",
        ];
        match signer {
            Signer::Cosign2 => args.push("--tlog-upload=false"),
            Signer::Cosign3 => args.extend(COSIGN3_OFFLINE),
            Signer::Cosign3Legacy => {
                args.extend(COSIGN3_OFFLINE);
                args.push("--new-bundle-format=false");
            }
        }
        args.push(image);
        let out = self.cosign_as(signer, &args);
        assert!(out.status.success(), "cosign sign {image}: {out:?}");
    }

    /// An SLSA provenance attestation of `image` with cosign 3 and the key pair `prefix`: a
    /// bundle of the same artifact type as a signature's, with another predicate.
    pub(crate) fn cosign_attest(&self, prefix: &Path, image: &str) {
        let key = prefix.with_extension("key");
        let predicate = prefix.with_extension("predicate.json");
        std::fs::write(&predicate, r#"{"buildType":"https://example.org/build"}"#).unwrap();
        let mut args = vec![
            "attest",
            "--key",
            key.to_str().expect("a UTF-8 path"),
            "--type",
            "slsaprovenance",
            "--predicate",
            predicate.to_str().expect("a UTF-8 path"),
            "--yes",
        ];
        args.extend(COSIGN3_OFFLINE);
        args.push(image);
        let out = self.cosign_as(Signer::Cosign3, &args);
        assert!(out.status.success(), "cosign attest {image}: {out:?}");
    }

    /// Whether cosign itself (`signer`'s) verifies `image` with the public key `prefix.pub`,
    /// offline.
    pub(crate) fn cosign_verifies(&self, signer: Signer, prefix: &Path, image: &str) -> bool {
        let key = prefix.with_extension("pub");
        let mut args = vec![
            "verify",
            "--key",
            key.to_str().expect("a UTF-8 path"),
            "--insecure-ignore-tlog=true",
        ];
        if signer != Signer::Cosign2 {
            args.extend(["--allow-http-registry", "--allow-insecure-registry"]);
        }
        args.push(image);
        self.cosign_as(signer, &args).status.success()
    }

    /// Takes the signatures of `repo@digest` out of the plain registry (its `.sig` tag and its
    /// referrers' fallback tag), as a registry clean-up or a rebuilt registry would.
    pub(crate) fn drop_signature(&self, repo: &str, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        let tags = self
            .plain_storage
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags");
        let mut dropped = 0;
        for tag in [format!("sha256-{hex}.sig"), format!("sha256-{hex}")] {
            if std::fs::remove_dir_all(tags.join(tag)).is_ok() {
                dropped += 1;
            }
        }
        assert!(dropped > 0, "no signature of {repo}@{digest} to drop");
    }
}

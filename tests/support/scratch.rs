//! Throw-away state for one test: a directory with its config files, and containers that
//! hold an image until dropped.

use std::path::PathBuf;

use super::env::Env;

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

//! What the daemon remembers across restarts, in one JSON file.
//!
//! Loads are tolerant: a missing file is a first start, a damaged one is reported and replaced,
//! never a reason to stop. Writes are atomic. Nothing in it is needed for safety: losing it
//! means first-pull pins are resolved again and the digest cache is refilled.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::policy::lockfile::LockKey;

/// The format this version reads and writes. A file of a later format was written by a newer
/// stowage (a downgrade): it is read for nothing and never rewritten, so an upgrade back finds
/// it whole.
pub(crate) const STATE_VERSION: u32 = 1;

/// Default location of the state file.
pub(crate) const DEFAULT_STATE_FILE: &str = "/var/lib/stowage/state.json";

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Format version, for later migrations.
    pub version: u32,
    /// Pins taken on first pull, by image (`name` or `name [platform]`).
    pub first_pull: BTreeMap<String, String>,
    /// For multi-platform indexes seen before: index digest, then `os/arch[/variant]`, to the
    /// platform's manifest digest. An index is immutable, so this never goes stale, and a
    /// follow check of an unchanged tag costs one HEAD request.
    pub index_platforms: BTreeMap<String, BTreeMap<String, String>>,
    /// When stowage first saw each image (seconds since the epoch), by image ID: the minimum
    /// age counts from here, never from an image's (often old) creation time.
    pub first_seen: BTreeMap<String, i64>,
    /// When a container last used each image (seconds), by image ID. The engine records no
    /// such thing; stowage notes it at each cycle and on container events.
    pub last_used: BTreeMap<String, i64>,
    /// Digests whose signature was verified, with the fingerprint of the key that signed them:
    /// a present, verified image costs no registry request, and a key that left the policy
    /// no longer counts. Digests are immutable, so an entry never goes stale.
    pub verified: BTreeMap<String, String>,
    /// The digest each `follow` or `first-pull` image's tag named, and since when stowage has
    /// seen it do so, by image: the cooldown of new digests (`min_digest_age`) counts from
    /// here.
    pub sightings: BTreeMap<String, Sighting>,
    /// Since when stowage has been watching this host: a max-age rule applies only after it
    /// has watched that long, so a lost state file cannot cause a mass deletion.
    pub watching_since: Option<i64>,
    /// When a prune cycle last looked at the store (nanoseconds: the engine's events are that
    /// fine): the engine's image deletions since then are read at the next one, so an image
    /// removed and pulled again meanwhile is new.
    pub observed_at_ns: Option<i64>,
    /// The images prune cycles removed lately, by ID, with what brings each back. A `docker
    /// create` that began before a removal can register its container only after the cycle's
    /// last look (one copying a VOLUME of many files takes seconds): a later cycle finds that
    /// container, its image gone, and puts the image back. Forgotten by the first cycle that
    /// looks long enough after the removal.
    pub removed: BTreeMap<String, RemovedImage>,
}

/// An image a prune cycle removed: what brings it back, and when it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedImage {
    /// Its names as the cycle reported them.
    pub names: Vec<String>,
    /// Every reference it had, tags and `name@digest`: it is pulled back by a digest and its
    /// tags put back.
    pub references: Vec<String>,
    /// When it was removed (seconds since the epoch, on the engine's clock).
    pub at: i64,
    /// A container uses it, and it could not be put back: reported once, tried again at every
    /// cycle while a container uses it (a registry down comes back).
    #[serde(default)]
    pub lost: bool,
}

/// A digest a tag named, and since when stowage has seen it do so (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// The digest.
    pub digest: String,
    /// When stowage first saw the tag name it, without a break.
    pub since: i64,
}

/// Why a state file of a later format is left alone.
fn newer_format(version: u32) -> String {
    format!(
        "the state file is of format {version}, written by a newer stowage (this one reads \
         format {STATE_VERSION}): it is left as it is, and this version keeps its state in \
         memory only; upgrade stowage again, or move the file aside to start afresh"
    )
}

impl State {
    /// Reads the state file; a missing or damaged file gives an empty state (with a warning for
    /// the damaged one).
    pub fn load(path: &Path) -> State {
        crate::policy::atomic_file::remove_orphans(path);
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(state) if state.version > STATE_VERSION => {
                    warn!(
                        path = %path.display(),
                        "{}; starting from an empty state",
                        newer_format(state.version)
                    );
                    State::default()
                }
                Ok(state) => state,
                Err(e) => {
                    warn!(
                        path = %path.display(),
                        "state file is damaged ({e}); starting from an empty state"
                    );
                    State::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                warn!(path = %path.display(), "cannot read the state file ({e}); starting from an empty state");
                State::default()
            }
        }
    }

    /// Changes the state file under an exclusive lock (`FILE.lock` beside it): reads what is on
    /// disk now, applies `change`, writes the result atomically, and returns it. A daemon and
    /// a `stowage pull` run by hand then merge their pins instead of the last writer winning.
    /// A damaged file is moved aside (`FILE.damaged`) rather than overwritten.
    ///
    /// The lock is waited for on a blocking thread: a `stowage pull` by hand may hold it for
    /// as long as it writes, and an async worker held that long stalls every task on it.
    pub async fn update(path: &Path, change: impl FnOnce(&mut State)) -> std::io::Result<State> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        crate::policy::atomic_file::create_dir(dir)?;
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_name)?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(std::io::Error::other)??;
        let mut state = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) if s.version > STATE_VERSION => {
                    return Err(std::io::Error::other(newer_format(s.version)));
                }
                Ok(s) => s,
                Err(e) => {
                    let mut aside = path.as_os_str().to_owned();
                    aside.push(".damaged");
                    warn!(
                        path = %path.display(),
                        "state file is damaged ({e}); moved aside, starting from an empty state"
                    );
                    std::fs::rename(path, &aside)?;
                    State::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        let before = state.clone();
        change(&mut state);
        if state != before {
            state.save(path)?;
        }
        drop(lock); // released only now, once the new state is written
        Ok(state)
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.clone();
        state.version = STATE_VERSION;
        let mut bytes = serde_json::to_vec_pretty(&state).expect("plain data always serialises");
        bytes.push(b'\n');
        crate::policy::atomic_file::write(path, &bytes)
    }

    /// The first-pull pin of an image.
    pub fn first_pull(&self, key: &LockKey) -> Option<&str> {
        self.first_pull.get(&key.to_string()).map(String::as_str)
    }

    /// Keeps only the first-pull pins of `keys`: a pin ends when its image leaves the config
    /// (or its name or platform changes, which makes it another image).
    pub fn retain_first_pulls<'a>(&mut self, keys: impl IntoIterator<Item = &'a LockKey>) {
        let keep: std::collections::HashSet<String> =
            keys.into_iter().map(ToString::to_string).collect();
        self.first_pull.retain(|k, _| keep.contains(k));
    }

    /// Drops the sightings of images other than `keys`: an image required again later starts
    /// its cooldown over.
    pub fn retain_sightings<'a>(&mut self, keys: impl IntoIterator<Item = &'a LockKey>) {
        let keep: std::collections::HashSet<String> =
            keys.into_iter().map(ToString::to_string).collect();
        self.sightings.retain(|k, _| keep.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_state_file_of_a_newer_format_is_never_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let newer = "{\"version\": 9, \"first_pull\": {\"a\": \"sha256:1\"}, \"future\": 1}\n";
        std::fs::write(&path, newer).unwrap();
        assert_eq!(State::load(&path), State::default());
        let error = State::update(&path, |s| {
            s.first_pull.insert("b".into(), "sha256:2".into());
        })
        .await
        .unwrap_err();
        assert!(error.to_string().contains("format 9"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), newer);
    }

    /// Another process (here another open of the lock file, by a thread) holds the lock: the
    /// update waits for it without holding up the runtime's one thread, where the other tasks
    /// go on. (Waiting on that thread instead, the update would finish only once the holder
    /// gives up after 5 s, and the ticks would find it finished.)
    #[tokio::test(flavor = "current_thread")]
    async fn waiting_for_the_lock_holds_up_no_other_task() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let lock = dir.path().join("state.json.lock");
            move || {
                let held = std::fs::File::create(lock).unwrap();
                held.lock().unwrap();
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(std::time::Duration::from_secs(5));
            }
        });
        locked_rx.recv().unwrap();
        let update = tokio::spawn({
            let path = path.clone();
            async move {
                State::update(&path, |s| {
                    s.first_pull.insert("a".into(), "sha256:a".into());
                })
                .await
            }
        });
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!update.is_finished(), "the update held up the runtime");
        assert!(!path.exists(), "written without the lock");
        release_tx.send(()).unwrap();
        let saved = update.await.unwrap().unwrap();
        holder.join().unwrap();
        assert_eq!(saved.first_pull.len(), 1);
        assert_eq!(State::load(&path).first_pull, saved.first_pull);
    }

    #[test]
    fn round_trips_and_tolerates_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path), State::default());
        let key = LockKey::new(&"r:1/a:1".parse().unwrap(), Some("linux/arm64"));
        let mut s = State::default();
        s.first_pull.insert(key.to_string(), "sha256:x".into());
        s.save(&path).unwrap();
        let back = State::load(&path);
        assert_eq!(back.first_pull(&key), Some("sha256:x"));
        assert_eq!(back.version, 1);
        std::fs::write(&path, b"{\"first_pull\": [").unwrap();
        assert_eq!(State::load(&path), State::default());
    }

    #[tokio::test]
    async fn updates_merge_with_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        State::update(&path, |s| {
            s.first_pull.insert("a".into(), "sha256:a".into());
        })
        .await
        .unwrap();
        // Another writer that loaded before the first one saved keeps both pins.
        let merged = State::update(&path, |s| {
            s.first_pull.insert("b".into(), "sha256:b".into());
        })
        .await
        .unwrap();
        assert_eq!(merged.first_pull.len(), 2);
        assert_eq!(State::load(&path), merged);
        std::fs::write(&path, b"garbage").unwrap();
        let fresh = State::update(&path, |_| {}).await.unwrap();
        assert_eq!(fresh, State::default());
        assert_eq!(
            std::fs::read(dir.path().join("state.json.damaged")).unwrap(),
            b"garbage"
        );
    }

    #[test]
    fn pins_of_images_that_left_the_config_are_dropped() {
        let a = LockKey::new(&"r:1/a:1".parse().unwrap(), None);
        let b = LockKey::new(&"r:1/b:1".parse().unwrap(), None);
        let mut s = State::default();
        s.first_pull.insert(a.to_string(), "sha256:a".into());
        s.first_pull.insert(b.to_string(), "sha256:b".into());
        s.retain_first_pulls([&a]);
        assert_eq!(s.first_pull.len(), 1);
        assert_eq!(s.first_pull(&a), Some("sha256:a"));
    }
}

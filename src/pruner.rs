//! A prune cycle against a real store: gather the facts, let [`crate::prune::plan_prune`]
//! decide, then remove one image at a time, never forced, pausing between removals. One
//! failure does not stop the cycle; every result is reported.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, PruneSettings};
use crate::converge::InFlight;
use crate::credentials::CredentialSource;
use crate::engine::Store;
use crate::failure::Failure;
use crate::pin::Pinned;
use crate::plan::content_names;
use crate::prune::{
    Candidate, Disk, Protection, PruneInput, PrunePlan, StoreImage, Usage, being_pulled, plan_prune,
};
use crate::registry::Resolver;
use crate::state::State;

/// How one planned removal ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    /// What was planned.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// `removed`, `failed` or `skipped` (stopping).
    pub result: &'static str,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// A container created from the image while it was being removed, and what was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub race: Option<Race>,
}

/// A removal that raced a container's creation: the engine checks for containers, then
/// deletes, with no lock between, so `docker create` at that moment can get a container whose
/// image is gone (the engine's own prune has the same hole).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Race {
    /// The image was pulled back by its digest and its names put back.
    Healed,
    /// It could not be put back: the container's image is gone.
    Lost {
        /// Why.
        error: String,
    },
}

/// How long after a cycle's last removal to look once more for a container created in the
/// same instant: its record can land in the engine's list a moment after the delete returned.
const RACE_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// The IDs of the images the config requires or pins: the image each required tag points at,
/// and the holder of each known pinned digest (under its repository or a mirror's).
pub fn required_ids(
    pinned: &[Pinned],
    state: &State,
    images: &[StoreImage],
    config: &Config,
) -> HashSet<String> {
    let mut ids = HashSet::new();
    for p in pinned {
        let reference = &p.image.reference;
        if let Some(tag) = reference.tag() {
            let name = format!("{}:{tag}", reference.name());
            ids.extend(
                images
                    .iter()
                    .filter(|i| i.tags.contains(&name))
                    .map(|i| i.id.clone()),
            );
        }
        if let Some(d) = p.known_digest(state) {
            let names: Vec<String> = content_names(reference, &config.registries)
                .into_iter()
                .map(|n| format!("{n}@{d}"))
                .collect();
            ids.extend(
                images
                    .iter()
                    .filter(|i| i.digests.iter().any(|x| names.contains(x)))
                    .map(|i| i.id.clone()),
            );
        }
    }
    ids
}

/// Brings the usage history up to date with what is seen now: images never seen before are
/// first seen now, images containers use are used now, images gone are forgotten.
pub fn observe(state: &State, images: &[StoreImage], in_use: &HashSet<String>, now: i64) -> Usage {
    let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    let mut first_seen: BTreeMap<String, i64> = state
        .first_seen
        .iter()
        .filter(|(id, _)| present.contains(id.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for i in images {
        first_seen.entry(i.id.clone()).or_insert(now);
    }
    let mut last_used: BTreeMap<String, i64> = state
        .last_used
        .iter()
        .filter(|(id, _)| present.contains(id.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for id in in_use {
        if present.contains(id.as_str()) {
            last_used.insert(id.clone(), now);
        }
    }
    Usage {
        first_seen: first_seen.into_iter().collect(),
        last_used: last_used.into_iter().collect(),
        watching_since: state.watching_since.unwrap_or(now),
    }
}

/// How long the event stream may stay silent before it is re-subscribed: bollard's stream can
/// go quiet without an error (bollard #113, why docuum left it), and re-subscribing with
/// `since` loses nothing.
const EVENTS_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often recorded uses are written to the state file.
const USES_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// Follows container create/start events and records each image's last use, in memory at once
/// and in the state file at most every 10 s, until `stop`. Reconnects after errors and after a
/// minute of silence.
pub async fn watch_uses<S: Store>(
    store: &S,
    state: &Mutex<State>,
    state_file: &std::path::Path,
    stop: &CancellationToken,
) {
    use futures_util::StreamExt;
    let mut since = chrono::Utc::now().timestamp();
    let mut pending: BTreeMap<String, i64> = BTreeMap::new();
    let mut flushed = Instant::now();
    let flush = |pending: &mut BTreeMap<String, i64>| {
        if pending.is_empty() {
            return;
        }
        let uses = std::mem::take(pending);
        let result = State::update(state_file, |s| {
            for (id, t) in &uses {
                let e = s.last_used.entry(id.clone()).or_insert(*t);
                *e = (*e).max(*t);
            }
        });
        match result {
            Ok(saved) => {
                *state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = saved
            }
            Err(e) => warn!("cannot save image uses to the state file: {e}"),
        }
    };
    loop {
        let stream = store.image_uses(since);
        tokio::pin!(stream);
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    flush(&mut pending);
                    return;
                }
                n = tokio::time::timeout(EVENTS_SILENCE, stream.next()) => n,
            };
            match next {
                Ok(Some(Ok((id, time)))) => {
                    debug!(image = %id, time, "image used");
                    {
                        let mut s = state
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let e = s.last_used.entry(id.clone()).or_insert(time);
                        *e = (*e).max(time);
                    }
                    pending.insert(id, time);
                    since = since.max(time);
                    if flushed.elapsed() >= USES_FLUSH {
                        flush(&mut pending);
                        flushed = Instant::now();
                    }
                }
                Ok(Some(Err(f))) => {
                    warn!("container events: {}; reconnecting", f.detail);
                    break;
                }
                // The stream ended, or went silent: subscribe again from the last event.
                Ok(None) | Err(_) => break,
            }
        }
        flush(&mut pending);
        flushed = Instant::now();
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// The ID of the container this process runs in, from `/proc/self/mountinfo`: the engine
/// bind-mounts `/etc/hostname` and friends from `.../containers/<id>/`. `None` on a host.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        (id.len() == 64 && rest[64..].starts_with('/')).then_some(id)
    })
}

/// Use of the filesystem at `path`.
pub fn disk_of(path: &std::path::Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(path).ok()?;
    let total = s.f_blocks.saturating_mul(s.f_frsize);
    let free = s.f_bfree.saturating_mul(s.f_frsize);
    Some(Disk {
        total,
        used: total.saturating_sub(free),
    })
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// What it planned.
    pub plan: PrunePlan,
    /// Each planned removal and how it went (none in a dry run).
    pub removals: Vec<Removal>,
    /// Bytes the build-cache pruning freed, when it ran.
    pub build_cache_freed: Option<u64>,
}

/// Runs prune cycles for one config.
pub struct Pruner<'a, S> {
    /// The engine's store.
    pub store: &'a S,
    /// The configuration (registries, state file).
    pub config: &'a Config,
    /// The `[prune]` rules.
    pub settings: &'a PruneSettings,
    /// Every pinned image.
    pub pinned: &'a [Pinned],
    /// The state (usage history, first-pull pins).
    pub state: &'a Mutex<State>,
    /// Names being pulled now: never removed under a pull.
    pub in_flight: InFlight,
    /// Cancelled when stopping: no removal starts after that.
    pub stop: CancellationToken,
    /// Asks registries whether they serve an image, where the store cannot tell.
    pub registry: &'a Resolver,
    /// Credentials for pulling back an image a removal took from a new container.
    pub credentials: &'a CredentialSource,
    /// Images seen served by their registry (by ID): asked once per process.
    pub registry_copies: Mutex<HashSet<String>>,
}

impl<S: Store> Pruner<'_, S> {
    /// Gathers the facts and plans a cycle; changes nothing.
    pub async fn plan(&self) -> Result<(PrunePlan, Usage), Failure> {
        let images = self.store.store().await?;
        let in_use = self.store.container_images().await?;
        let disk = match self.store.data_root().await? {
            Some(root) => disk_of(&root),
            None => None,
        };
        let now = chrono::Utc::now().timestamp();
        let (usage, required) = {
            let state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                observe(&state, &images, &in_use, now),
                required_ids(self.pinned, &state, &images, self.config),
            )
        };
        let input = PruneInput {
            images,
            in_use,
            required,
            in_flight: self.in_flight.names_and_digests(),
            own_image: match std::env::var("STOWAGE_OWN_IMAGE_ID") {
                Ok(id) => Some(id),
                Err(_) => self.own_image().await,
            },
            usage: usage.clone(),
            disk,
            now,
            no_registry_copy: HashSet::new(),
        };
        Ok((self.plan_checked(input).await, usage))
    }

    /// The plan, where the store cannot show which images a registry has, with each tagged
    /// candidate checked with its registry first (one HEAD per digest, until one answers). One
    /// no registry serves is local only: kept unless `prune_local_only`, and the plan is made
    /// again without it. An unreachable registry counts as not serving: never a removal that
    /// cannot be undone on a guess.
    async fn plan_checked(&self, mut input: PruneInput) -> PrunePlan {
        let (keep, limits) = (&self.settings.keep, &self.settings.limits);
        let mut plan = plan_prune(&input, keep, limits);
        if self.store.image_store().digests_show_a_registry_copy() || keep.prune_local_only {
            return plan;
        }
        let mut checked = HashSet::new();
        loop {
            let mut demoted = false;
            for c in &plan.remove {
                let Some(image) = input.images.iter().find(|i| i.id == c.id) else {
                    continue;
                };
                if image.tags.is_empty() || !checked.insert(c.id.clone()) {
                    continue; // dangling (never local only), or asked already
                }
                if !self.has_registry_copy(image).await {
                    input.no_registry_copy.insert(c.id.clone());
                    demoted = true;
                }
            }
            if !demoted {
                return plan;
            }
            plan = plan_prune(&input, keep, limits);
        }
    }

    /// Whether any registry serves one of the image's repository digests.
    async fn has_registry_copy(&self, image: &StoreImage) -> bool {
        if self.copies().contains(&image.id) {
            return true;
        }
        for name in &image.digests {
            let Ok(reference) = name.parse::<crate::reference::ImageRef>() else {
                continue;
            };
            match self.registry.serves(&reference).await {
                Ok(true) => {
                    self.copies().insert(image.id.clone());
                    return true;
                }
                Ok(false) => debug!(image = %image.id, name, "no registry copy"),
                Err(f) => {
                    debug!(image = %image.id, name, "registry copy unknown, kept: {}", f.detail)
                }
            }
        }
        false
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.registry_copies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The image of the container stowage runs in, if it runs in one: never removed.
    async fn own_image(&self) -> Option<String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let container = own_container_id(&mountinfo)?;
        self.store.container_image(&container).await.ok().flatten()
    }

    /// One cycle: plan, record what was seen, and remove (unless `dry_run`).
    pub async fn cycle(&self, dry_run: bool) -> Result<Cycle, Failure> {
        let started = Instant::now();
        let (plan, usage) = self.plan().await?;
        if dry_run {
            return Ok(Cycle {
                plan,
                removals: Vec::new(),
                build_cache_freed: None,
            });
        }
        for k in &plan.keep {
            if k.protection != Protection::NotSelected {
                debug!(image = %k.id, names = ?k.names, protection = %k.protection.name(), "kept");
            }
        }
        self.record(&usage);
        let mut results = Vec::with_capacity(plan.remove.len());
        for (n, c) in plan.remove.iter().enumerate() {
            if self.stop.is_cancelled() {
                results.push(Removal {
                    candidate: c.clone(),
                    result: "skipped",
                    error: None,
                    race: None,
                });
                continue;
            }
            if n > 0 && !self.settings.pause.is_zero() {
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(self.settings.pause) => {}
                }
            }
            // A container may have appeared since the plan: look again right before. The same
            // look shows whether one came with an earlier removal of this cycle.
            if let Ok(used) = self.store.container_images().await {
                self.heal_races(&used, &mut results).await;
                if used.contains(&c.id) {
                    results.push(Removal {
                        candidate: c.clone(),
                        result: "failed",
                        error: Some("a container started using it since the plan".into()),
                        race: None,
                    });
                    continue;
                }
            }
            // A pull may have started since the plan: leave its image alone. Checked last,
            // with no await between it and the removal.
            let pulling = self.in_flight.names_and_digests();
            if being_pulled(&c.id, c.references.iter(), &pulling) {
                results.push(Removal {
                    candidate: c.clone(),
                    result: "skipped",
                    error: Some("a pull of it started".into()),
                    race: None,
                });
                continue;
            }
            match self.store.remove(&c.id, &c.references).await {
                Ok(()) => {
                    info!(image = %c.id, names = ?c.names, bytes = c.size, rule = ?c.rule, "removed");
                    results.push(Removal {
                        candidate: c.clone(),
                        result: "removed",
                        error: None,
                        race: None,
                    });
                }
                Err(f) => {
                    warn!(image = %c.id, names = ?c.names, "removal failed: {}", f.detail);
                    results.push(Removal {
                        candidate: c.clone(),
                        result: "failed",
                        error: Some(f.detail),
                        race: None,
                    });
                }
            }
        }
        if results.iter().any(|r| r.result == "removed") {
            tokio::time::sleep(RACE_SETTLE).await;
            if let Ok(used) = self.store.container_images().await {
                self.heal_races(&used, &mut results).await;
            }
        }
        // The build cache (CI hosts), after the images.
        let settings = self.settings;
        let mut build_cache_freed = None;
        if (settings.build_cache_max_age.is_some() || settings.build_cache_max_size.is_some())
            && !self.stop.is_cancelled()
        {
            match self
                .store
                .prune_build_cache(settings.build_cache_max_age, settings.build_cache_max_size)
                .await
            {
                Ok(bytes) => {
                    info!(bytes, "build cache pruned");
                    build_cache_freed = Some(bytes);
                }
                Err(f) => warn!("build cache pruning failed: {}", f.detail),
            }
        }
        let removed = results.iter().filter(|r| r.result == "removed").count();
        info!(
            removed,
            failed = results.iter().filter(|r| r.result == "failed").count(),
            deferred = plan.deferred,
            bytes = results
                .iter()
                .filter(|r| r.result == "removed")
                .map(|r| r.candidate.size)
                .sum::<u64>(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "prune cycle finished"
        );
        Ok(Cycle {
            plan,
            removals: results,
            build_cache_freed,
        })
    }

    /// Puts back every image this cycle removed that a container now uses (`used`: the
    /// images of every container), and records what happened in its removal.
    async fn heal_races(&self, used: &HashSet<String>, results: &mut [Removal]) {
        for r in results.iter_mut() {
            if r.result != "removed" || r.race.is_some() || !used.contains(&r.candidate.id) {
                continue;
            }
            // Pulled again since (a `docker run` of a missing image pulls it): the container
            // has its image, and there was no race to heal.
            if self.store.has_image(&r.candidate.id).await.unwrap_or(false) {
                continue;
            }
            let c = &r.candidate;
            r.race = Some(match self.restore(c).await {
                Ok(()) => {
                    warn!(image = %c.id, names = ?c.names, "a container was created from the image as it was removed; pulled it back by digest");
                    Race::Healed
                }
                Err(error) => {
                    warn!(image = %c.id, names = ?c.names, "a container was created from the image as it was removed, and it cannot be put back: {error}");
                    Race::Lost { error }
                }
            });
        }
    }

    /// Pulls a removed image back by its digests, one after the other until one serves, and
    /// puts its tags back.
    async fn restore(&self, c: &Candidate) -> Result<(), String> {
        let (digests, tags): (Vec<String>, Vec<String>) =
            c.references.iter().cloned().partition(|r| r.contains('@'));
        let mut error = String::from("it has no digest to pull it back by (a local build)");
        for name in digests {
            let by_digest: crate::reference::ImageRef = match name.parse() {
                Ok(r) => r,
                Err(e) => {
                    error = format!("{name}: {e}");
                    continue;
                }
            };
            let auth = self.auth_for(by_digest.registry()).await;
            match self.store.restore(&by_digest, &tags, auth).await {
                Ok(()) => return Ok(()),
                Err(f) => error = format!("{name}: {}", f.detail),
            }
        }
        Err(error)
    }

    /// Credentials for `registry`, if there are any (a helper that does not answer within
    /// [`crate::converge::CREDENTIAL_TIMEOUT`] counts as none).
    async fn auth_for(&self, registry: &str) -> Option<crate::credentials::RegistryAuth> {
        let source = self.credentials.clone();
        let registry = registry.to_owned();
        tokio::time::timeout(
            crate::converge::CREDENTIAL_TIMEOUT,
            tokio::task::spawn_blocking(move || source.lookup(&registry)),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(Result::ok)
        .flatten()
    }

    /// Saves the usage history (merged with the state file on disk).
    fn record(&self, usage: &Usage) {
        let result = State::update(&self.config.state_file, |s| {
            s.first_seen = usage
                .first_seen
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            // Merge, latest wins: container events may have been saved since the plan.
            let mut last_used: BTreeMap<String, i64> = s
                .last_used
                .iter()
                .filter(|(id, _)| usage.first_seen.contains_key(*id))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for (id, t) in &usage.last_used {
                let e = last_used.entry(id.clone()).or_insert(*t);
                *e = (*e).max(*t);
            }
            s.last_used = last_used;
            s.watching_since.get_or_insert(usage.watching_since);
        });
        match result {
            Ok(saved) => {
                *self
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = saved
            }
            Err(e) => warn!(
                path = %self.config.state_file.display(),
                "cannot save the state file ({e}); image ages restart from now"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], digests: &[&str]) -> StoreImage {
        StoreImage {
            id: id.into(),
            parent: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
            size: 1,
            created: 0,
        }
    }

    #[test]
    fn the_own_container_is_found_in_mountinfo() {
        let id = "a".repeat(64);
        let inside = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(own_container_id(&inside), Some(id));
        assert_eq!(
            own_container_id("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
    }

    #[test]
    fn observing_keeps_first_sight_and_marks_use() {
        let mut state = State::default();
        state.first_seen.insert("a".into(), 10);
        state.first_seen.insert("gone".into(), 5);
        state.watching_since = Some(1);
        let images = [image("a", &[], &[]), image("b", &[], &[])];
        let usage = observe(&state, &images, &HashSet::from(["b".to_owned()]), 100);
        assert_eq!(usage.first_seen.get("a"), Some(&10));
        assert_eq!(usage.first_seen.get("b"), Some(&100));
        assert!(!usage.first_seen.contains_key("gone"));
        assert_eq!(usage.last_used.get("b"), Some(&100));
        assert_eq!(usage.watching_since, 1);
        let fresh = observe(&State::default(), &images, &HashSet::new(), 100);
        assert_eq!(fresh.watching_since, 100);
    }

    #[test]
    fn required_images_are_found_by_tag_and_by_pinned_digest() {
        let text = "[[image]]\nname = \"r:1/a:1\"\n[[image]]\nname = \"r:1/b:1\"\n";
        let config = Config::parse(std::path::Path::new("c.toml"), text).unwrap();
        let pinned = crate::pin::pin_images(&config, None, None).unwrap();
        let mut state = State::default();
        state
            .first_pull
            .insert(pinned[1].key.to_string(), "sha256:bb".into());
        let images = [
            image("ta", &["r:1/a:1"], &[]),
            image("hb", &[], &["r:1/b@sha256:bb"]),
            image("other", &["r:1/c:1"], &["r:1/b@sha256:cc"]),
        ];
        let ids = required_ids(&pinned, &state, &images, &config);
        assert_eq!(ids, HashSet::from(["ta".to_owned(), "hb".to_owned()]));
    }
}

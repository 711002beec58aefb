//! An in-memory engine and registry behind the real traits, for orchestration tests that run
//! in milliseconds under paused time. They prove the puller's and the daemon's logic; the
//! integration tests prove the adapters against real engines and registries.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::io::credentials::RegistryAuth;
use crate::io::engine::{Engine, OnBytes, PullRequest, Pulled, Store, unfollowed_bytes};
use crate::io::registry::{Registry, Resolved};
use crate::model::failure::{Failure, FailureClass};
use crate::model::image::{Deleted, Deletions, ImageStore, LocalImage, StoreEvent, StoreImage};
use crate::model::platform::IndexCache;
use crate::model::rate_limit::Budget;
use crate::model::reference::{ImageRef, repository};
use crate::model::signature::Signature;
use crate::model::sync::Locked;

/// An engine whose store is a map, whose registry is a set of digests, and whose pulls take
/// `pull_time` of (paused) time and can be told to fail. Clones share everything.
#[derive(Clone, Default)]
pub(crate) struct FakeEngine(Arc<Mutex<EngineState>>);

#[derive(Default)]
struct EngineState {
    /// Image ID to image.
    images: BTreeMap<String, LocalImage>,
    /// What the registries serve: manifest digests.
    served: HashSet<String>,
    /// Failures the next pulls return, in order.
    /// What each next pull does: fail with this, or (`None`) succeed.
    failures: VecDeque<Option<Failure>>,
    /// How long a pull takes.
    pull_time: Duration,
    /// Every pull asked for (`name@digest`), in order.
    pulls: Vec<String>,
    /// Images containers use.
    in_use: HashSet<String>,
    /// When the container using each image was created (seconds; absent: long ago).
    created: HashMap<String, i64>,
    /// How far its clock is ahead of the host's (seconds).
    clock_ahead: i64,
    /// Says it is Podman's store (else Docker's classic one).
    podman: bool,
    /// Who follows the store's events (`store_events`).
    followers: Vec<tokio::sync::mpsc::UnboundedSender<StoreEvent>>,
    /// How many times containers were listed.
    listings: usize,
    /// When the first image is removed, a container starts using the second.
    on_removal_use: Option<(String, String)>,
    /// While the first image is deleted, it is given the second as a name, which goes with it
    /// unsaid (Podman's DELETE and a concurrent `tag`).
    on_removal_tag: Option<(String, String)>,
    /// Pulls under way now, and the most there ever were at once.
    pulling: usize,
    most_pulling: usize,
    /// Image ID to its parent's (a local build's base).
    parents: HashMap<String, String>,
    /// Calls to the store's name lookups and DELETEs so far.
    calls: usize,
    /// Changes to make to the store just before a numbered call (see [`FakeEngine::churn_at`]).
    churn: VecDeque<(usize, Churn)>,
    /// Every image the engine deleted, in order, with the names it had and whether a container
    /// used it right before.
    deleted: Vec<(String, Vec<String>, bool)>,
    /// Every name a DELETE removed, in order.
    untagged: Vec<Untagged>,
    /// The names the churn of the latest call moved.
    churned_now: HashSet<String>,
    /// Event streams fail at once, as an engine that went away.
    events_down: bool,
    /// Images whose next pull brings back the record without the layers, as Docker 28's
    /// containerd store after a delete that raced a create.
    pull_back_partial: HashSet<String>,
    /// Images held without their layers.
    partial: HashSet<String>,
    /// What each load held (the archive's text, here the `name@digest` it was made of).
    loads: Vec<String>,
}

/// A name a DELETE removed, and from which image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Untagged {
    /// The name.
    pub name: String,
    /// The image it named.
    pub image: String,
    /// Whether churn had moved it onto that image in the instant just before this DELETE
    /// (after any look the pruner could take).
    pub moved_just_before: bool,
}

/// A change someone else makes to the store while a prune works: a pull or build moving a tag,
/// a name added, a name removed, a container created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Churn {
    /// `tag` now names image `to` (and no other).
    Tag { tag: String, to: String },
    /// The name is removed from whatever image has it (a tag only: the image stays).
    Untag { name: String },
    /// A container is created from image `id`.
    Use { id: String },
}

impl FakeEngine {
    /// Ends every event stream followed so far, as an engine that closes them does.
    pub(crate) fn end_event_streams(&self) {
        self.0.locked().followers.clear();
    }

    /// From now on, event streams fail as soon as they are followed (`true`), or work again.
    pub(crate) fn set_events_down(&self, down: bool) {
        self.0.locked().events_down = down;
    }

    /// The next pull of image `id` brings back its record without its layers (Docker 28's
    /// containerd store after a delete that raced a create), until an archive is loaded.
    pub(crate) fn pull_back_partial(&self, id: &str) {
        self.0.locked().pull_back_partial.insert(id.to_owned());
    }

    /// What each load held, in order.
    pub(crate) fn loads(&self) -> Vec<String> {
        self.0.locked().loads.clone()
    }

    /// Makes `digest` pullable from any registry.
    pub(crate) fn serve(&self, digest: &str) {
        self.0.locked().served.insert(digest.to_owned());
    }

    /// Pulls of `digest` fail from now on (its registry no longer serves it).
    pub(crate) fn unserve(&self, digest: &str) {
        self.0.locked().served.remove(digest);
    }

    /// The next pulls fail with these, one each, before any succeeds.
    pub(crate) fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.0
            .locked()
            .failures
            .extend(failures.into_iter().map(Some));
    }

    /// The next pull succeeds, then the ones after it fail with these.
    pub(crate) fn fail_after_first(&self, failures: impl IntoIterator<Item = Failure>) {
        let mut s = self.0.locked();
        s.failures.push_back(None);
        s.failures.extend(failures.into_iter().map(Some));
    }

    /// Every pull from now takes this long.
    pub(crate) fn set_pull_time(&self, d: Duration) {
        self.0.locked().pull_time = d;
    }

    /// The most pulls that were ever under way at once.
    pub(crate) fn most_at_once(&self) -> usize {
        self.0.locked().most_pulling
    }

    /// The pulls asked for so far.
    pub(crate) fn pulls(&self) -> Vec<String> {
        self.0.locked().pulls.clone()
    }

    /// The ID of the image `name` (`repo:tag`) points at.
    pub(crate) fn tagged(&self, name: &str) -> Option<String> {
        let s = self.0.locked();
        s.images
            .values()
            .find(|i| i.tags.iter().any(|t| t == name))
            .map(|i| i.id.clone())
    }

    /// Adds an image with these names, as a local build or an earlier pull would.
    pub(crate) fn add(&self, id: &str, tags: &[&str], digests: &[&str]) {
        let image = LocalImage {
            id: id.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            digests: digests.iter().map(|d| (*d).to_owned()).collect(),
        };
        self.0.locked().images.insert(id.to_owned(), image);
    }

    /// A container uses the image `id`; those following events are told.
    pub(crate) fn use_image(&self, id: &str) {
        let mut s = self.0.locked();
        s.in_use.insert(id.to_owned());
        s.tell(StoreEvent::Used {
            image: id.to_owned(),
            time: 0,
            time_ns: now_ns(),
            created: true,
        });
    }

    /// Its clock runs `seconds` ahead of the host's (a remote engine's).
    pub(crate) fn set_clock_ahead(&self, seconds: i64) {
        self.0.locked().clock_ahead = seconds;
    }

    /// A container created at `created` (seconds since the epoch) uses the image `id`.
    pub(crate) fn use_image_created(&self, id: &str, created: i64) {
        self.use_image(id);
        self.0.locked().created.insert(id.to_owned(), created);
    }

    /// When `removed` is removed, a container starts using `used` (a race with the pruner).
    pub(crate) fn on_removal_use(&self, removed: &str, used: &str) {
        self.0.locked().on_removal_use = Some((removed.to_owned(), used.to_owned()));
    }

    /// Says it is Podman's store from now on, for what the pruner does there only.
    pub(crate) fn say_podman(&self) {
        self.0.locked().podman = true;
    }

    /// While `removed` is deleted, someone tags it `tag`: the engine says so in its events,
    /// and the deletion takes the name without listing it (Podman 5).
    pub(crate) fn on_removal_tag(&self, removed: &str, tag: &str) {
        self.0.locked().on_removal_tag = Some((removed.to_owned(), tag.to_owned()));
    }

    /// Image `child` is built on `parent`.
    pub(crate) fn set_parent(&self, child: &str, parent: &str) {
        let mut s = self.0.locked();
        s.parents.insert(child.to_owned(), parent.to_owned());
    }

    /// Makes `churn` happen now, told in the events as the engine would.
    pub(crate) fn churn_now(&self, churn: Churn) {
        self.0.locked().apply(churn);
    }

    /// Makes `churn` happen just before the store's `n`th name lookup or DELETE (from 0): the
    /// instant between a look and the removal it decides.
    pub(crate) fn churn_at(&self, n: usize, churn: Churn) {
        self.0.locked().churn.push_back((n, churn));
    }

    /// Every image the engine deleted, in order, with the names it had and whether a container
    /// used it right before the DELETE.
    pub(crate) fn deleted(&self) -> Vec<(String, Vec<String>, bool)> {
        self.0.locked().deleted.clone()
    }

    /// Every name a DELETE removed, in order.
    pub(crate) fn untagged(&self) -> Vec<Untagged> {
        self.0.locked().untagged.clone()
    }

    /// The image with this ID and its names, if any.
    pub(crate) fn image(&self, id: &str) -> Option<LocalImage> {
        self.0.locked().images.get(id).cloned()
    }

    /// How many times containers were listed.
    pub(crate) fn container_listings(&self) -> usize {
        self.0.locked().listings
    }

    /// The image ID a pull of `digest` creates.
    fn id_of(digest: &str) -> String {
        format!("sha256:id-{}", digest.trim_start_matches("sha256:"))
    }
}

impl Engine for FakeEngine {
    async fn list_images(&self) -> Result<Vec<LocalImage>, Failure> {
        Ok(self.0.locked().images.values().cloned().collect())
    }

    async fn pull(&self, request: &PullRequest, _: &OnBytes<'_>) -> Result<Pulled, Failure> {
        let name = request.reference.to_string();
        let (failure, pull_time) = {
            let mut s = self.0.locked();
            s.pulls.push(name.clone());
            s.pulling += 1;
            s.most_pulling = s.most_pulling.max(s.pulling);
            (s.failures.pop_front().flatten(), s.pull_time)
        };
        tokio::time::sleep(pull_time).await;
        self.0.locked().pulling -= 1;
        if let Some(f) = failure {
            return Err(f);
        }
        let digest = request.reference.digest().unwrap_or_default().to_owned();
        let mut s = self.0.locked();
        if !s.served.contains(&digest) {
            return Err(Failure::new(
                FailureClass::NotFound,
                format!("manifest for {name} not found"),
            ));
        }
        let id = Self::id_of(&digest);
        let updated = !s.images.contains_key(&id);
        let image = s.images.entry(id.clone()).or_insert_with(|| LocalImage {
            id,
            ..LocalImage::default()
        });
        if !image.digests.contains(&name) {
            image.digests.push(name);
        }
        let id = image.id.clone();
        if s.pull_back_partial.remove(&id) {
            s.partial.insert(id);
        }
        Ok(Pulled {
            digest: Some(digest),
            updated,
        })
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), Failure> {
        let name = format!("{repo}:{tag}");
        let mut s = self.0.locked();
        let Some(id) = s
            .images
            .values()
            .find(|i| i.id == source || i.digests.iter().any(|d| d == source))
            .map(|i| i.id.clone())
        else {
            return Err(Failure::new(
                FailureClass::NotFound,
                format!("no such image: {source}"),
            ));
        };
        for image in s.images.values_mut() {
            image.tags.retain(|t| *t != name);
        }
        if let Some(image) = s.images.get_mut(&id) {
            image.tags.push(name);
        }
        Ok(())
    }

    async fn platform(&self) -> Result<String, Failure> {
        Ok("linux/amd64".to_owned())
    }
}

impl Store for FakeEngine {
    fn clock_ahead(&self) -> i64 {
        self.0.locked().clock_ahead
    }

    fn build_cache(&self) -> crate::model::image::BuildCache {
        crate::model::image::BuildCache::ByAgeAndSize
    }

    fn image_store(&self) -> ImageStore {
        match self.0.locked().podman {
            true => ImageStore::Podman,
            false => ImageStore::Classic,
        }
    }

    async fn store(&self) -> Result<Vec<StoreImage>, Failure> {
        let s = self.0.locked();
        Ok(s.images
            .values()
            .map(|i| StoreImage {
                id: i.id.clone(),
                parent: s.parents.get(&i.id).cloned(),
                tags: i.tags.clone(),
                digests: i.digests.clone(),
                digest_names: i.digests.clone(),
                labels: BTreeMap::new(),
                size: 1,
                created: 0,
                steps: Vec::new(),
            })
            .collect())
    }

    async fn container_images(&self) -> Result<HashSet<String>, Failure> {
        let mut s = self.0.locked();
        s.listings += 1;
        Ok(s.in_use.clone())
    }

    async fn containers_created(&self, id: &str) -> Result<Vec<i64>, Failure> {
        let s = self.0.locked();
        Ok(s.in_use
            .contains(id)
            .then(|| s.created.get(id).copied().unwrap_or(0))
            .into_iter()
            .collect())
    }

    async fn image_named(&self, name: &str) -> Result<Option<LocalImage>, Failure> {
        let mut s = self.0.locked();
        s.tick();
        Ok(s.named(name).and_then(|id| s.images.get(&id).cloned()))
    }

    /// Its look shows every name, as Docker's does.
    async fn names_of(&self, id: &str) -> Result<Option<LocalImage>, Failure> {
        self.image_named(id).await
    }

    async fn delete(&self, name: &str) -> Result<Deleted, Failure> {
        let mut s = self.0.locked();
        s.tick();
        let target = s.named(name);
        let tagged = s
            .on_removal_tag
            .take_if(|(removed, _)| target.as_ref() == Some(removed));
        let answer = s.delete(name)?;
        if let Some((id, tag)) = tagged {
            // Told before the deletion's own events would be, as the engine orders them.
            let event = StoreEvent::Named {
                id,
                time_ns: now_ns(),
                name: Some(tag),
            };
            s.tell(event);
        }
        let hook = s
            .on_removal_use
            .take_if(|(removed, _)| answer.images.contains(removed));
        drop(s);
        if let Some((_, used)) = hook {
            self.use_image(&used);
        }
        Ok(answer)
    }

    async fn retag(&self, id: &str, name: &str) -> Result<(), Failure> {
        let (repo, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        self.tag(id, repo, tag).await
    }

    async fn has_image(&self, id: &str) -> Result<bool, Failure> {
        Ok(self.0.locked().images.contains_key(id))
    }

    async fn image_whole(&self, id: &str) -> Result<bool, Failure> {
        let s = self.0.locked();
        Ok(s.images.contains_key(id) && !s.partial.contains(id))
    }

    async fn load(&self, archive: &std::path::Path) -> Result<(), Failure> {
        let held = std::fs::read_to_string(archive)
            .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
        let digest = held.rsplit_once('@').map_or("", |(_, d)| d);
        let id = Self::id_of(digest);
        let mut s = self.0.locked();
        if !s.images.contains_key(&id) {
            return Err(Failure::new(
                FailureClass::Engine,
                format!("the archive {held} names no image here"),
            ));
        }
        s.partial.remove(&id);
        s.loads.push(held);
        Ok(())
    }

    async fn restore(
        &self,
        by_digest: &ImageRef,
        tags: &[String],
        auth: Option<RegistryAuth>,
    ) -> Result<(), Failure> {
        let request = PullRequest {
            reference: by_digest.clone(),
            platform: None,
            auth,
        };
        self.pull(&request, &unfollowed_bytes).await?;
        for t in tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((t, "latest"));
            self.tag(&by_digest.to_string(), repo, tag).await?;
        }
        Ok(())
    }

    async fn data_root(&self) -> Result<Option<std::path::PathBuf>, Failure> {
        Ok(None)
    }

    async fn prune_build_cache(
        &self,
        _max_age: Option<Duration>,
        _max_bytes: Option<u64>,
    ) -> Result<u64, Failure> {
        Ok(0)
    }

    async fn container_image(&self, _container: &str) -> Result<Option<String>, Failure> {
        Ok(None)
    }

    async fn deleted_since(&self, _since: i64) -> Result<Deletions, Failure> {
        let ids = self
            .0
            .locked()
            .deleted
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect();
        Ok(Deletions {
            ids,
            complete: true,
        })
    }

    fn store_events(
        &self,
        _since: i64,
    ) -> impl futures_util::Stream<Item = Result<StoreEvent, Failure>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut s = self.0.locked();
        // Down: the stream fails at once, as a socket nobody listens on does.
        let down = s.events_down.then(|| {
            Failure::new(
                FailureClass::Engine,
                "cannot connect to the engine".to_owned(),
            )
        });
        if down.is_none() {
            s.followers.push(tx);
        }
        futures_util::stream::unfold((rx, down), |(mut rx, down)| async move {
            if let Some(failure) = down {
                return Some((Err(failure), (rx, None)));
            }
            rx.recv().await.map(|event| (Ok(event), (rx, None)))
        })
    }
}

impl EngineState {
    /// One more lookup or DELETE: whatever churn was due happens first.
    fn tick(&mut self) {
        self.churned_now.clear();
        while self.churn.front().is_some_and(|(n, _)| *n <= self.calls) {
            if let Some((_, churn)) = self.churn.pop_front() {
                self.apply(churn);
            }
        }
        self.calls += 1;
    }

    fn apply(&mut self, churn: Churn) {
        match churn {
            Churn::Tag { tag, to } => {
                if !self.images.contains_key(&to) {
                    return;
                }
                self.churned_now.insert(tag.clone());
                self.tell(StoreEvent::Named {
                    id: to.clone(),
                    time_ns: now_ns(),
                    name: Some(tag.clone()),
                });
                for image in self.images.values_mut() {
                    image.tags.retain(|t| *t != tag);
                }
                if let Some(image) = self.images.get_mut(&to) {
                    image.tags.push(tag);
                }
            }
            Churn::Untag { name } => {
                let mut untagged = Vec::new();
                for image in self.images.values_mut().filter(|i| i.tags.len() > 1) {
                    if image.tags.contains(&name) {
                        image.tags.retain(|t| *t != name);
                        untagged.push(image.id.clone());
                    }
                }
                for id in untagged {
                    self.tell(StoreEvent::Unnamed {
                        id,
                        time_ns: now_ns(),
                        name: Some(name.clone()),
                    });
                }
            }
            Churn::Use { id } => {
                if self.images.contains_key(&id) {
                    self.in_use.insert(id.clone());
                    self.tell(StoreEvent::Used {
                        image: id,
                        time: 0,
                        time_ns: now_ns(),
                        created: true,
                    });
                }
            }
        }
    }

    fn log_untagged(&mut self, answer: &Deleted, id: &str) {
        for name in &answer.untagged {
            self.tell(StoreEvent::Unnamed {
                id: id.to_owned(),
                time_ns: now_ns(),
                name: Some(name.clone()),
            });
        }
        for name in &answer.untagged {
            let moved_just_before = self.churned_now.contains(name);
            self.untagged.push(Untagged {
                name: name.clone(),
                image: id.to_owned(),
                moved_just_before,
            });
        }
    }

    /// Tells those following events.
    fn tell(&mut self, event: StoreEvent) {
        self.followers.retain(|f| f.send(event.clone()).is_ok());
    }

    /// The ID of the image a name or an ID names.
    fn named(&self, name: &str) -> Option<String> {
        if self.images.contains_key(name) {
            return Some(name.to_owned());
        }
        self.images
            .values()
            .find(|i| i.tags.iter().chain(&i.digests).any(|n| n == name))
            .map(|i| i.id.clone())
    }

    /// A DELETE as Docker's classic store does it, never forced, parents never pruned: a name
    /// goes (a tag takes its repository's digests along when it was their last tag), and the
    /// image with its last name unless a child holds it; an ID takes its names when it has at
    /// most one tag and all are of one repository, else it is refused.
    fn delete(&mut self, name: &str) -> Result<Deleted, Failure> {
        let refused = |why: String| Err(Failure::new(FailureClass::Engine, why));
        let Some(id) = self.named(name) else {
            return Ok(Deleted::default());
        };
        let has_child = self.parents.values().any(|p| *p == id);
        let Some(image) = self.images.get_mut(&id) else {
            return Ok(Deleted::default());
        };
        let by_id = name == id;
        let names_before: Vec<String> = image.tags.iter().chain(&image.digests).cloned().collect();
        let names = names_before.len();
        let used = self.in_use.contains(&id);
        let mut answer = Deleted::default();
        if by_id {
            let repos: HashSet<&str> = image
                .tags
                .iter()
                .chain(&image.digests)
                .map(|n| repository(n))
                .collect();
            if image.tags.len() > 1 || repos.len() > 1 {
                return refused(format!(
                    "conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories"
                ));
            }
            if used || has_child {
                return refused(format!(
                    "conflict: unable to delete {id} - image is being used"
                ));
            }
            answer.untagged.append(&mut image.tags);
            answer.untagged.append(&mut image.digests);
        } else {
            if names == 1 && used {
                return refused(format!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container is using its referenced image"
                ));
            }
            let repo = repository(name).to_owned();
            image.tags.retain(|t| t != name);
            image.digests.retain(|d| d != name);
            answer.untagged.push(name.to_owned());
            if !name.contains('@') && !image.tags.iter().any(|t| repository(t) == repo) {
                let (same, other): (Vec<String>, Vec<String>) =
                    image.digests.drain(..).partition(|d| repository(d) == repo);
                image.digests = other;
                answer.untagged.extend(same);
            }
            if !image.tags.is_empty() || !image.digests.is_empty() || has_child || used {
                self.log_untagged(&answer, &id);
                return Ok(answer);
            }
        }
        self.log_untagged(&answer, &id);
        self.images.remove(&id);
        self.deleted.push((id.clone(), names_before, used));
        self.tell(StoreEvent::Gone {
            id: id.clone(),
            time_ns: now_ns(),
        });
        answer.images.push(id);
        Ok(answer)
    }
}

/// Now, in nanoseconds: the time of an image event, as the engine's.
fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A registry that knows each tag's digest, and can be told to fail.
#[derive(Clone, Default)]
pub(crate) struct FakeRegistry(Arc<Mutex<RegistryState>>);

#[derive(Default)]
struct RegistryState {
    /// `name:tag` to manifest digest.
    tags: HashMap<String, String>,
    /// `name:tag` to a multi-platform index: its digest, and each platform's manifest digest.
    indexes: HashMap<String, (String, HashMap<String, String>)>,
    /// Failures the next resolutions return, in order.
    failures: VecDeque<Failure>,
    /// How many resolutions were asked for.
    asked: usize,
    /// Registry hosts that never answer, and how often each was asked.
    unreachable: HashMap<String, usize>,
    /// What each registry says of its budget.
    budgets: BTreeMap<String, Budget>,
    /// Registries left alone after a rate limit.
    blocked: HashSet<String>,
    /// Signatures by `name@digest`.
    signatures: HashMap<String, Vec<Signature>>,
    /// Archives fail to be fetched.
    archives_fail: bool,
    /// Every image archived (`name@digest`), and the name each loads as.
    archived: Vec<(String, String)>,
    /// How many signature fetches were asked for.
    signatures_asked: usize,
}

impl FakeRegistry {
    /// Points `name` (`host/repo:tag`) at `digest`.
    pub(crate) fn set(&self, name: &str, digest: &str) {
        self.0
            .locked()
            .tags
            .insert(name.to_owned(), digest.to_owned());
    }

    /// Points `name` at the index `index`, listing `platforms` (`os/arch` to digest).
    pub(crate) fn set_index(&self, name: &str, index: &str, platforms: &[(&str, &str)]) {
        let platforms = platforms
            .iter()
            .map(|(p, d)| ((*p).to_owned(), (*d).to_owned()))
            .collect();
        self.0
            .locked()
            .indexes
            .insert(name.to_owned(), (index.to_owned(), platforms));
    }

    /// From now on, fetching an image archive fails as an unreachable registry would.
    pub(crate) fn fail_archives(&self) {
        self.0.locked().archives_fail = true;
    }

    /// Every image archived (`name@digest`) and the name each loads as, in order.
    pub(crate) fn archived(&self) -> Vec<(String, String)> {
        self.0.locked().archived.clone()
    }

    /// The next resolutions fail with these, one each.
    pub(crate) fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.0.locked().failures.extend(failures);
    }

    /// How many resolutions were asked for.
    pub(crate) fn asked(&self) -> usize {
        self.0.locked().asked
    }

    /// Registry `host` never answers from now on: each resolution fails as a network failure.
    pub(crate) fn unreachable(&self, host: &str) {
        self.0.locked().unreachable.insert(host.to_owned(), 0);
    }

    /// How many resolutions unreachable `host` was asked for.
    pub(crate) fn asked_unreachable(&self, host: &str) -> usize {
        self.0.locked().unreachable.get(host).copied().unwrap_or(0)
    }

    /// `host` states `budget` from now on.
    pub(crate) fn set_budget(&self, host: &str, budget: Budget) {
        self.0.locked().budgets.insert(host.to_owned(), budget);
    }

    /// `signed` (`name@digest`) carries these signatures.
    pub(crate) fn sign(&self, signed: &str, layers: Vec<Signature>) {
        self.0.locked().signatures.insert(signed.to_owned(), layers);
    }

    /// How many signature fetches were asked for.
    pub(crate) fn signatures_asked(&self) -> usize {
        self.0.locked().signatures_asked
    }
}

impl Registry for FakeRegistry {
    fn resolve<'a>(
        &'a self,
        image: &'a ImageRef,
        platform: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Resolved, Failure>> {
        Box::pin(async move {
            let mut s = self.0.locked();
            s.asked += 1;
            if let Some(f) = s.failures.pop_front() {
                return Err(f);
            }
            if let Some(asked) = s.unreachable.get_mut(image.registry()) {
                *asked += 1;
                return Err(Failure::new(
                    FailureClass::Network,
                    format!("{}: connection refused", image.registry()),
                ));
            }
            if let Some((index, platforms)) = s.indexes.get(&image.to_string()) {
                let wanted = platform.unwrap_or("linux/amd64");
                let digest = platforms.get(wanted).cloned().ok_or_else(|| {
                    Failure::new(FailureClass::NotFound, format!("{image}: no {wanted}"))
                })?;
                return Ok(Resolved {
                    digest,
                    index: Some(index.clone()),
                });
            }
            let digest = s.tags.get(&image.to_string()).cloned().ok_or_else(|| {
                Failure::new(FailureClass::NotFound, format!("{image}: manifest unknown"))
            })?;
            Ok(Resolved {
                digest,
                index: None,
            })
        })
    }

    fn serves<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<bool, Failure>> {
        Box::pin(async move {
            let s = self.0.locked();
            Ok(image
                .digest()
                .is_some_and(|d| s.tags.values().any(|x| x == d)))
        })
    }

    fn host_platform(&self) -> &str {
        "linux/amd64"
    }

    fn cache_snapshot(&self) -> IndexCache {
        IndexCache::new()
    }

    fn budgets(&self) -> BTreeMap<String, Budget> {
        self.0.locked().budgets.clone()
    }

    fn refusal(&self, host: &str) -> Option<Failure> {
        self.0
            .locked()
            .blocked
            .contains(host)
            .then(|| Failure::new(FailureClass::RateLimited, format!("{host} is left alone")))
    }

    fn rate_limited(&self, host: &str) {
        self.0.locked().blocked.insert(host.to_owned());
    }

    fn signatures<'a>(
        &'a self,
        signed: &'a ImageRef,
    ) -> BoxFuture<'a, Result<Vec<Signature>, Failure>> {
        Box::pin(async move {
            let mut s = self.0.locked();
            s.signatures_asked += 1;
            Ok(s.signatures
                .get(&signed.to_string())
                .cloned()
                .unwrap_or_default())
        })
    }

    fn archive<'a>(
        &'a self,
        image: &'a ImageRef,
        name: &'a str,
        dir: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<std::path::PathBuf, Failure>> {
        Box::pin(async move {
            let mut s = self.0.locked();
            if s.archives_fail {
                return Err(Failure::new(
                    FailureClass::Network,
                    format!("{}: connection refused", image.registry()),
                ));
            }
            s.archived.push((image.to_string(), name.to_owned()));
            let path = dir.join("image.tar");
            std::fs::write(&path, image.to_string())
                .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
            Ok(path)
        })
    }
}

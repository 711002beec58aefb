//! Putting back what a removal took from a container: the races of a removal with a
//! container's creation, found at the end of the batch or (registered late) by a later cycle.

use std::collections::HashSet;

use tracing::{debug, error, warn};

use super::{AgainstPlan, Pruner, Race, Removal, RemovalResult};
use crate::decide::late::{late_check, raced};
use crate::decide::prune_plan::Candidate;
use crate::decide::removal::{Taken, qualified};
use crate::io::engine::Store;
use crate::model::image::ImageStore;
use crate::model::reference::ImageRef;
use crate::model::sync::Locked;
use crate::policy::state::RemovedImage;

/// A removed image, as much of it as putting it back needs.
#[derive(Clone, Copy)]
struct Gone<'a> {
    /// Its ID.
    id: &'a str,
    /// Its tags and `name@digest` references.
    references: &'a [String],
}

impl<'a> Gone<'a> {
    fn of(c: &'a Candidate) -> Gone<'a> {
        Gone {
            id: &c.id,
            references: &c.references,
        }
    }
}

/// A container found using an image an earlier cycle removed (its creation registered after
/// that cycle's last look), and what was done.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LateRace {
    /// The image's ID.
    pub id: String,
    /// Its names when it was removed.
    pub names: Vec<String>,
    /// When it was removed (seconds since the epoch).
    pub removed_at: i64,
    /// Whether it was put back.
    pub outcome: Race,
}

/// An image a container uses that a prune removed and could not put back then: tried again
/// at every cycle while a container uses it, and said once (a metric and the exit status of
/// `stowage prune` keep saying it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LostImage {
    /// The image's ID.
    pub id: String,
    /// Its names when it was removed.
    pub names: Vec<String>,
    /// When it was removed (seconds since the epoch, on the engine's clock).
    pub removed_at: i64,
}

/// What a cycle found of the removals earlier cycles remembered, and what to remember now.
pub(super) struct LateHeal {
    /// The containers found using such an image, and what was done (a loss found before is
    /// not said again).
    pub found: Vec<LateRace>,
    /// Removals no longer to remember: put back, not raced, or no container uses them long
    /// enough after.
    pub settled: Vec<String>,
    /// Removals a container uses that were lost before and tried again in vain now.
    pub still_lost: Vec<LostImage>,
}

impl LateHeal {
    /// The removals a container uses that could not be put back, now (said in `found`) or
    /// before: marked, to be tried again next cycle without being said again.
    pub(super) fn lost(&self) -> impl Iterator<Item = &String> {
        self.found
            .iter()
            .filter(|r| matches!(r.outcome, Race::Lost { .. }))
            .map(|r| &r.id)
            .chain(self.still_lost.iter().map(|l| &l.id))
    }
}

/// What to remember of a removed image a container uses, once it was looked at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// Nothing: dealt with.
    Forget,
    /// That it could not be put back (said once).
    Lost,
    /// It as it was: it could not be looked at.
    Keep,
}

impl<S: Store> Pruner<'_, S> {
    /// Puts back the images earlier cycles removed that a container listed since uses
    /// (`in_use`, listed at `listed_at`, seconds), where that container raced the removal and
    /// the store does not hold the image whole again. Returns what was found and what to
    /// remember of each remembered removal.
    pub(super) async fn heal_late(&self, in_use: &HashSet<String>, listed_at: i64) -> LateHeal {
        let removed = self.state.locked().removed.clone();
        let check = late_check(&removed, in_use, listed_at);
        let mut done = LateHeal {
            found: Vec::new(),
            settled: check.forget,
            still_lost: Vec::new(),
        };
        for id in &check.heal {
            let Some(image) = removed.get(id) else {
                continue;
            };
            let (memory, found) = self.heal_one_late(id, image).await;
            match memory {
                Memory::Forget => done.settled.push(id.clone()),
                Memory::Lost | Memory::Keep => {}
            }
            match found {
                Some(found) => done.found.push(found),
                None if memory == Memory::Lost => done.still_lost.push(LostImage {
                    id: id.clone(),
                    names: image.names.clone(),
                    removed_at: image.at,
                }),
                None => {}
            }
        }
        done
    }

    /// One removed image a container uses: put back if that container raced its removal.
    async fn heal_one_late(&self, id: &str, image: &RemovedImage) -> (Memory, Option<LateRace>) {
        // Pulled again since, by a `docker run` or by hand: nothing to put back.
        if self.store.image_whole(id).await.unwrap_or(false) {
            return (Memory::Forget, None);
        }
        match self.store.containers_created(id).await {
            Ok(created) if raced(image.at, &created) => {}
            Ok(_) => {
                debug!(image = %id, "a container created after the image's removal uses it (pulled again, then removed by someone else): not put back");
                return (Memory::Forget, None);
            }
            // Looked at again by the next cycle.
            Err(f) => {
                debug!(image = %id, "cannot list the containers of an image removed earlier: {f}");
                return (Memory::Keep, None);
            }
        }
        let gone = Gone {
            id,
            references: &image.references,
        };
        let names = image.names.join(", ");
        let outcome = match self.restore_checked(gone).await {
            Ok(()) if image.lost => {
                warn!(image = %id, names = %names, removed_at = image.at, "an image a container uses, which a prune removed and could not put back then, is back: pulled by digest");
                Race::Healed
            }
            Ok(()) => {
                warn!(image = %id, names = %names, removed_at = image.at, "a container was created from the image as an earlier prune removed it, and registered after that prune's last look; pulled it back by digest");
                Race::Healed
            }
            // Said once; tried again at every cycle while a container uses it.
            Err(error) if image.lost => {
                debug!(image = %id, "an image a container uses still cannot be put back: {error}");
                return (Memory::Lost, None);
            }
            Err(error) => {
                warn!(image = %id, names = %names, removed_at = image.at, "a container was created from the image as an earlier prune removed it, and it cannot be put back (tried again at each prune while a container uses it): {error}");
                Race::Lost { error }
            }
        };
        let memory = match outcome {
            Race::Healed => Memory::Forget,
            Race::Lost { .. } => Memory::Lost,
        };
        let found = LateRace {
            id: id.to_owned(),
            names: image.names.clone(),
            removed_at: image.at,
            outcome,
        };
        (memory, Some(found))
    }

    /// Puts back every image this cycle removed that a container now uses (`used`: the
    /// images of every container), and records what happened in its removal.
    pub(super) async fn heal_races(&self, used: &HashSet<String>, results: &mut [Removal]) {
        for r in results.iter_mut() {
            if r.result != RemovalResult::Removed
                || r.race.is_some()
                || !used.contains(&r.candidate.id)
            {
                continue;
            }
            // Pulled again since (a `docker run` of a missing image pulls it): the container
            // has its image, and there was no race to heal. Whole, not only present: on the
            // containerd store that pull leaves the layers out as the heal's own pull does.
            if self
                .store
                .image_whole(&r.candidate.id)
                .await
                .unwrap_or(false)
            {
                continue;
            }
            let c = &r.candidate;
            r.race = Some(match self.restore_checked(Gone::of(c)).await {
                Ok(()) => {
                    warn!(image = %c.id, names = %c.names.join(", "), "a container was created from the image as it was removed; pulled it back by digest");
                    Race::Healed
                }
                Err(error) => {
                    warn!(image = %c.id, names = %c.names.join(", "), "a container was created from the image as it was removed, and it cannot be put back: {error}");
                    Race::Lost { error }
                }
            });
        }
    }

    /// Puts back the images this cycle removed that someone named while the engine deleted
    /// them (`added`: for each removal, the names tags and pulls gave its image and its build
    /// steps since the plan, by the events). Podman lets a `tag` or a `pull` through during its
    /// DELETE and deletes the image with the new name, which its answer does not list
    /// (docs/reliability.md): the name was someone's, and a name added keeps an image. Docker
    /// refuses such a DELETE instead, and its untag events do not say which name went, so an
    /// owner's own untag could not be told from a loss: Podman only. Reported as taken against
    /// the plan; a build step has no digest to be pulled back by, and is reported lost.
    pub(super) async fn heal_names_added(
        &self,
        added: Vec<Vec<(String, Vec<String>)>>,
        results: &mut [Removal],
    ) {
        if self.store.image_store() != ImageStore::Podman {
            return;
        }
        for (r, added) in results.iter_mut().zip(added) {
            if r.result != RemovalResult::Removed {
                continue;
            }
            for (id, names) in added {
                let lost = self.names_lost(r, names).await;
                if lost.is_empty() {
                    continue;
                }
                let taken = Taken {
                    image: Some(id),
                    names: lost,
                    another: false,
                };
                let outcome = self.name_again(&r.candidate, &taken).await;
                r.against_plan.push(AgainstPlan { taken, outcome });
            }
        }
    }

    /// Pulls back an image a deletion took with the names it was given meanwhile (`taken`),
    /// by the planned image's digests, and names it so.
    async fn name_again(&self, c: &Candidate, taken: &Taken) -> Race {
        let id = taken.image.as_deref().unwrap_or(&c.id);
        // A build step's content is the planned image's only in part: no digest brings it back.
        let mut references: Vec<String> = match id == c.id {
            true => c
                .references
                .iter()
                .filter(|n| n.contains('@'))
                .cloned()
                .collect(),
            false => Vec::new(),
        };
        references.extend(taken.names.iter().cloned());
        let gone = Gone {
            id,
            references: &references,
        };
        let names = taken.names.join(", ");
        match self.restore_checked(gone).await {
            Ok(()) => {
                error!(image = %id, names = %names, "the image was given a name as the engine deleted it, which took the name too; pulled it back by digest and named it again");
                Race::Healed
            }
            Err(error) => {
                error!(image = %id, names = %names, "the image was given a name as the engine deleted it, which took the name too, and it cannot be put back: {error}");
                Race::Lost { error }
            }
        }
    }

    /// Of the names given to a removal's image since the plan (`added`), those the deletion
    /// took: not planned, not reported already, and naming no image now (one that names an
    /// image was given after the deletion, or moved on since).
    async fn names_lost(&self, r: &Removal, added: Vec<String>) -> Vec<String> {
        let known: Vec<String> = r
            .candidate
            .references
            .iter()
            .chain(r.against_plan.iter().flat_map(|a| a.taken.names.iter()))
            .map(|n| qualified(n))
            .collect();
        let mut lost: Vec<String> = Vec::new();
        for name in added {
            let q = qualified(&name);
            if known.contains(&q) || lost.iter().any(|l| qualified(l) == q) {
                continue;
            }
            if let Ok(None) = self.store.image_named(&name).await {
                lost.push(name);
            }
        }
        lost
    }

    /// [`Self::restore`], then a look that the engine has the image whole. After a delete
    /// that raced a `docker create`, Docker 28's containerd store keeps the layers' snapshots
    /// for the new container but drops their blobs: the pull back brings the record and the
    /// manifest only ("up to date" after that), and the image neither saves nor pushes, nor
    /// does any image pulled later that shares a layer. Loading it from its registry as an
    /// archive brings the blobs back (docs/reliability.md).
    async fn restore_checked(&self, gone: Gone<'_>) -> Result<(), String> {
        self.restore(gone).await?;
        if self.whole(gone.id).await? {
            return Ok(());
        }
        warn!(image = %gone.id, "the engine pulled the image back without its layers; loading it from its registry");
        self.reload(gone.references).await?;
        if self.whole(gone.id).await? {
            return Ok(());
        }
        Err(
            "the engine holds it without its layers, even after loading it from its registry: \
             its containers run, but it cannot be saved or pushed"
                .to_owned(),
        )
    }

    /// Whether the engine holds image `id` whole (see [`Store::image_whole`]).
    async fn whole(&self, id: &str) -> Result<bool, String> {
        self.store
            .image_whole(id)
            .await
            .map_err(|f| format!("cannot tell whether the engine holds it whole: {f}"))
    }

    /// Loads a removed image from its registry as an archive, by the first of its digests
    /// that serves: the engine takes its blobs from the archive where a pull would skip them.
    /// The archive names the image by that digest, which moves no tag (the pull back put
    /// back those still free).
    async fn reload(&self, references: &[String]) -> Result<(), String> {
        let digests = references.iter().filter(|r| r.contains('@'));
        let dir = tempfile::tempdir()
            .map_err(|e| format!("no temporary directory to fetch it into: {e}"))?;
        let mut error = String::from("it has no digest to fetch it by (a local build)");
        for name in digests {
            let by_digest: ImageRef = match name.parse() {
                Ok(r) => r,
                Err(e) => {
                    error = format!("{name}: {e}");
                    continue;
                }
            };
            let archive = match self.registry.archive(&by_digest, name, dir.path()).await {
                Ok(archive) => archive,
                Err(f) => {
                    error = format!("fetching {name} from its registry: {f}");
                    continue;
                }
            };
            match self.store.load(&archive).await {
                Ok(()) => return Ok(()),
                Err(f) => error = format!("loading {name}: {f}"),
            }
        }
        Err(error)
    }

    /// Pulls a removed image back by its digests, one after the other until one serves, and
    /// puts its tags back.
    async fn restore(&self, gone: Gone<'_>) -> Result<(), String> {
        let (digests, tags): (Vec<String>, Vec<String>) = gone
            .references
            .iter()
            .cloned()
            .partition(|r| r.contains('@'));
        self.pull_back(&digests, &[]).await?;
        for tag in tags {
            if self.unclaimed(gone.id, &tag).await {
                self.retag(gone.id, std::slice::from_ref(&tag)).await?;
            }
        }
        Ok(())
    }

    /// Whether a removed image's `tag` names no other image now, looked at right before it is
    /// put back (after the pull, which can take minutes): a tag pulled or built onto another
    /// image since the removal stays where its owner put it.
    async fn unclaimed(&self, id: &str, tag: &str) -> bool {
        match self.store.image_named(tag).await {
            Ok(Some(now)) if now.id != id => {
                warn!(image = %id, tag, now = %now.id, "not putting the tag back: it names another image now");
                false
            }
            _ => true,
        }
    }

    /// Pulls an image back by the first of `digests` that serves, and points `tags` at it.
    pub(super) async fn pull_back(
        &self,
        digests: &[String],
        tags: &[String],
    ) -> Result<(), String> {
        let mut error = String::from("it has no digest to pull it back by (a local build)");
        for name in digests {
            let by_digest: ImageRef = match name.parse() {
                Ok(r) => r,
                Err(e) => {
                    error = format!("{name}: {e}");
                    continue;
                }
            };
            let auth = self
                .credentials
                .lookup_timed(by_digest.registry(), "pulling it back anonymously")
                .await;
            match self.store.restore(&by_digest, tags, auth).await {
                Ok(()) => return Ok(()),
                Err(f) => error = format!("{name}: {f}"),
            }
        }
        Err(error)
    }
}

//! A prune cycle against a real store: gather the facts, let [`crate::decide::prune_plan::plan_prune`]
//! decide, then remove, never forced: a few images at a time, or one at a time with a pause
//! between removals. One failure does not stop the cycle; every result is reported.

#[cfg(test)]
mod churn_tests;
mod cycle;
mod heal;
mod remove;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures_util::StreamExt;
use serde::Serialize;
use tracing::{debug, warn};

use crate::decide::pin::Pinned;
use crate::decide::prune_plan::{Candidate, Protection, PruneInput, PrunePlan, plan_prune};
use crate::decide::removal::Taken;
use crate::decide::usage::{Usage, observe, required_ids};
use crate::io::credentials::CredentialSource;
use crate::io::engine::Store;
use crate::io::host::{disk_of, own_container};
use crate::io::registry::Registry;
use crate::model::failure::Failure;
use crate::model::image::{ImageStore, OWN_IMAGE_VAR, StoreImage, own_image_query};
use crate::model::sync::Locked;
use crate::policy::config::{Config, PruneSettings};
use crate::policy::state::State;
use crate::service::in_flight::InFlight;
use crate::service::progress::Progress;
use crate::service::shutdown::Shutdown;

pub use heal::{LateRace, LostImage};

/// Registry copies asked about at once while planning (one HEAD a digest).
const REGISTRY_CHECKS_AT_ONCE: usize = 8;

/// How one planned removal ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    /// What was planned.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// How it went.
    pub result: RemovalResult,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// A container created from the image while it was being removed, and what was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub race: Option<Race>,
    /// The names the engine removed, as it said (tags and `name@digest` references).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untagged: Vec<String>,
    /// Its build steps removed with it (untagged intermediate images of a classic build).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps_removed: Vec<String>,
    /// Its tags that named another image (or none) by the time they were to be removed: left
    /// alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
    /// What the engine took that the plan did not name (never expected; a store that changed
    /// in the instant between a look and a DELETE), and whether it was put back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub against_plan: Vec<AgainstPlan>,
}

/// An image or names a removal took against its plan, and what was done about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgainstPlan {
    /// What was taken.
    #[serde(flatten)]
    pub taken: Taken,
    /// Whether it was put back (pulled by digest, its tags pointed at it again).
    pub outcome: Race,
}

/// How one removal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovalResult {
    /// The image is gone.
    Removed,
    /// The engine refused, or a container started using it since the plan.
    Failed,
    /// Not attempted: stopping, or a pull of it started.
    Skipped,
}

impl RemovalResult {
    /// Its name in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalResult::Removed => "removed",
            RemovalResult::Failed => "failed",
            RemovalResult::Skipped => "skipped",
        }
    }
}

impl Removal {
    /// A removal that ended as `result`, with `error` saying why when it is not `Removed`.
    fn new(candidate: &Candidate, result: RemovalResult, error: Option<String>) -> Removal {
        Removal {
            candidate: candidate.clone(),
            result,
            error,
            race: None,
            untagged: Vec::new(),
            steps_removed: Vec::new(),
            moved: Vec::new(),
            against_plan: Vec::new(),
        }
    }
}

/// A removal that raced a container's creation: the engine checks for containers, then
/// deletes, with no lock between, so `docker create` at that moment can get a container whose
/// image is gone (the engine's own prune has the same hole).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Race {
    /// The image was pulled back by its digest and its names put back.
    Healed,
    /// It could not be put back: the container's image is gone.
    Lost {
        /// Why.
        error: String,
    },
}

/// A plan made again during a cycle, when the store changed under it.
pub(crate) struct Replan {
    /// What it removes, with the build steps that go with each.
    remove: HashMap<String, Vec<String>>,
    /// Why it keeps each image it keeps.
    why: HashMap<String, String>,
}

impl Replan {
    /// Why image `id` must now stay, if it must.
    pub(crate) fn kept(&self, id: &str) -> Option<&str> {
        if self.remove.contains_key(id) {
            return None;
        }
        Some(
            self.why
                .get(id)
                .map_or("it is gone already", String::as_str),
        )
    }

    /// The build steps that go with image `id` now.
    pub(crate) fn steps(&self, id: &str) -> Option<&[String]> {
        self.remove.get(id).map(Vec::as_slice)
    }
}

/// A plan, and what it was made from.
pub(crate) struct Planned {
    /// The plan.
    pub plan: PrunePlan,
    /// The usage history it saw.
    pub usage: Usage,
    /// Its input.
    pub input: PruneInput,
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// What it planned.
    pub plan: PrunePlan,
    /// Each planned removal and how it went (none in a dry run).
    pub removals: Vec<Removal>,
    /// Containers found using images earlier cycles removed, and whether each image was put
    /// back (none in a dry run).
    pub late_races: Vec<LateRace>,
    /// Images containers use that earlier cycles removed and could not put back, tried again
    /// by this one and still not back (each was said once, when first lost).
    pub still_lost: Vec<LostImage>,
    /// Bytes the build-cache pruning freed, when it ran.
    pub build_cache_freed: Option<u64>,
}

impl Cycle {
    /// How many images containers use are missing after this cycle because a prune removed
    /// them and could not put them back: lost now or before, and not back yet.
    pub fn images_lost(&self) -> usize {
        let lost = |race: Option<&Race>| matches!(race, Some(Race::Lost { .. }));
        self.removals
            .iter()
            .filter(|r| lost(r.race.as_ref()))
            .count()
            + self
                .late_races
                .iter()
                .filter(|r| lost(Some(&r.outcome)))
                .count()
            + self.still_lost.len()
    }
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
    /// Triggered when stopping: no removal starts after that.
    pub stop: Shutdown,
    /// Asks registries whether they serve an image, where the store cannot tell.
    pub registry: &'a dyn Registry,
    /// Credentials for pulling back an image a removal took from a new container.
    pub credentials: &'a CredentialSource,
    /// Images seen served by their registry (by ID): asked once per process.
    pub registry_copies: Mutex<HashSet<String>>,
    /// Told of each removal as the cycle goes.
    pub(crate) progress: &'a dyn Progress,
}

impl<'a, S> Pruner<'a, S> {
    /// This pruner, telling `progress` of each removal.
    pub(crate) fn followed_by(self, progress: &'a dyn Progress) -> Self {
        Pruner { progress, ..self }
    }
}

impl<S: Store> Pruner<'_, S> {
    /// Gathers the facts and plans a cycle; changes nothing.
    pub async fn plan(&self) -> Result<(PrunePlan, Usage), Failure> {
        let planned = self.planned().await?;
        Ok((planned.plan, planned.usage))
    }

    /// [`Self::plan`], with what it was made from.
    pub(crate) async fn planned(&self) -> Result<Planned, Failure> {
        // Before the listing: a deletion after this is read at the next cycle, even one that
        // the listing still missed.
        let listed_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let images = self.store.store().await?;
        let (plan, mut usage, input) = self.plan_input(images).await?;
        usage.observed_at_ns = listed_ns;
        Ok(Planned { plan, usage, input })
    }

    /// [`Self::plan`] over a listing of the store already made (`stowage plan` lists it once
    /// for both sides).
    pub(crate) async fn plan_over(
        &self,
        images: Vec<StoreImage>,
    ) -> Result<(PrunePlan, Usage), Failure> {
        let (plan, usage, _) = self.plan_input(images).await?;
        Ok((plan, usage))
    }

    async fn plan_input(
        &self,
        images: Vec<StoreImage>,
    ) -> Result<(PrunePlan, Usage, PruneInput), Failure> {
        let in_use = self.store.container_images().await?;
        let own_image = own_image_among(self.store, Some(&images))
            .await
            .map_err(OwnImageError::into_failure)?;
        let mut input = self.input_over(images, in_use).await?;
        input.own_image = own_image;
        let usage = input.usage.clone();
        Ok((self.plan_checked(&mut input).await, usage, input))
    }

    /// The planner's input over a listing of the store and of what containers use: the
    /// history, what is required or being pulled, the disk, now. No own image, no registry
    /// copies checked yet.
    async fn input_over(
        &self,
        images: Vec<StoreImage>,
        in_use: HashSet<String>,
    ) -> Result<PruneInput, Failure> {
        let disk = match self.store.data_root().await? {
            Some(root) => disk_of(&root),
            None => None,
        };
        // Deleted since the last look (by anyone) and back now: new to the store. A failure to
        // ask only keeps the old ages, as before this was asked.
        let deleted = self.deleted_since_last_look().await;
        let now = chrono::Utc::now().timestamp();
        let (usage, required) = {
            let state = self.state.locked();
            (
                observe(&state, &images, &in_use, &deleted, now),
                required_ids(self.pinned, &state, &images, self.config),
            )
        };
        Ok(PruneInput {
            images,
            in_use,
            required,
            in_flight: self.in_flight.names_and_digests(),
            own_image: None,
            usage,
            disk,
            now,
            no_registry_copy: HashSet::new(),
        })
    }

    /// The images the engine deleted since the last cycle's look: if one is back, it is new.
    /// A record that may be cut short (Docker keeps 256 events) is said once per cycle.
    async fn deleted_since_last_look(&self) -> HashSet<String> {
        let Some(since) = self.state.locked().observed_at_ns else {
            return HashSet::new();
        };
        match self.store.deleted_since(since).await {
            Ok(deletions) => {
                if !deletions.complete && self.store.image_store() != ImageStore::Podman {
                    warn!(
                        "the engine's record of events since the last prune cycle is cut short \
                         (dockerd keeps its last 256): an image removed and pulled again \
                         meanwhile keeps its first age; the daemon follows events live"
                    );
                }
                deletions.ids.into_iter().collect()
            }
            Err(f) => {
                debug!("past deletions unknown ({f}); ages as recorded");
                HashSet::new()
            }
        }
    }

    /// The plan, where the store cannot show which images a registry has, with each tagged
    /// candidate checked with its registry first (one HEAD per digest, until one answers). One
    /// no registry serves is local only: kept unless `prune_local_only`, and the plan is made
    /// again without it. An unreachable registry counts as not serving: never a removal that
    /// cannot be undone on a guess.
    async fn plan_checked(&self, input: &mut PruneInput) -> PrunePlan {
        let (keep, limits) = (&self.settings.keep, &self.settings.limits);
        let mut plan = plan_prune(input, keep, limits);
        if self.store.image_store().digests_show_a_registry_copy() || keep.prune_local_only {
            return plan;
        }
        let mut checked = HashSet::new();
        loop {
            let to_ask: Vec<&StoreImage> = plan
                .remove
                .iter()
                .filter_map(|c| input.images.iter().find(|i| i.id == c.id))
                // Dangling (never local only), or asked already.
                .filter(|image| !image.tags.is_empty() && checked.insert(image.id.clone()))
                .collect();
            let local_only: Vec<String> = futures_util::stream::iter(to_ask)
                .map(|image| async move { (!self.has_registry_copy(image).await).then_some(image) })
                // A registry a continent away answers in tens of milliseconds: a plan of
                // hundreds of candidates asks a few at once.
                .buffer_unordered(REGISTRY_CHECKS_AT_ONCE)
                .filter_map(|image| async move { image.map(|i| i.id.clone()) })
                .collect()
                .await;
            if local_only.is_empty() {
                return plan;
            }
            input.no_registry_copy.extend(local_only);
            plan = plan_prune(input, keep, limits);
        }
    }

    /// The plan made again over the store as it is now (its names, images, the containers
    /// `in_use`, the disk, pulls under way), with what could not have changed since `planned`
    /// (the daemon's own image, registry copies) carried over.
    pub(crate) async fn replan(
        &self,
        planned: &PruneInput,
        in_use: HashSet<String>,
    ) -> Result<Replan, Failure> {
        let images = self.store.store().await?;
        let mut input = self.input_over(images, in_use).await?;
        input.own_image.clone_from(&planned.own_image);
        input.no_registry_copy.clone_from(&planned.no_registry_copy);
        let plan = plan_prune(&input, &self.settings.keep, &self.settings.limits);
        let why = plan
            .keep
            .iter()
            .map(|k| {
                let why = match &k.protection {
                    Protection::NotSelected => "no rule selects it any more".to_owned(),
                    p => p.words(),
                };
                (k.id.clone(), why)
            })
            .collect();
        Ok(Replan {
            remove: plan.remove.into_iter().map(|c| (c.id, c.steps)).collect(),
            why,
        })
    }

    /// Whether any registry serves the image by one of its [`StoreImage::copy_references`].
    async fn has_registry_copy(&self, image: &StoreImage) -> bool {
        if self.copies().contains(&image.id) {
            return true;
        }
        for name in &image.copy_references() {
            let Ok(reference) = name.parse::<crate::model::reference::ImageRef>() else {
                continue;
            };
            match self.registry.serves(&reference).await {
                Ok(true) => {
                    self.copies().insert(image.id.clone());
                    return true;
                }
                Ok(false) => debug!(image = %image.id, name, "no registry copy"),
                Err(f) => {
                    debug!(image = %image.id, name, "registry copy unknown, kept: {f}")
                }
            }
        }
        false
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.registry_copies.locked()
    }
}

/// Why the image stowage runs from cannot be known.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OwnImageError {
    /// `STOWAGE_OWN_IMAGE_ID` is not an ID, or names no image: a usage error.
    #[error("{0}")]
    Invalid(String),
    /// The engine could not be asked.
    #[error("{0}")]
    Engine(Failure),
}

impl OwnImageError {
    fn into_failure(self) -> Failure {
        match self {
            OwnImageError::Invalid(why) => {
                Failure::new(crate::model::failure::FailureClass::Engine, why)
            }
            OwnImageError::Engine(f) => f,
        }
    }
}

/// The ID of the image stowage runs from, never removed: `STOWAGE_OWN_IMAGE_ID` as the engine
/// resolves it (a short ID too), else the image of the container it runs in, if it runs in
/// one. A value that names no image is an error, never ignored: ignored, it protects nothing.
pub(crate) async fn own_image<S: Store>(store: &S) -> Result<Option<String>, OwnImageError> {
    own_image_among(store, None).await
}

/// [`own_image`], among the images of a listing already made, if there is one.
async fn own_image_among<S: Store>(
    store: &S,
    listed: Option<&[StoreImage]>,
) -> Result<Option<String>, OwnImageError> {
    let Ok(value) = std::env::var(OWN_IMAGE_VAR) else {
        let Some(container) = own_container() else {
            return Ok(None);
        };
        return Ok(store.container_image(&container).await.ok().flatten());
    };
    let query = own_image_query(&value).map_err(OwnImageError::Invalid)?;
    let listing;
    let images = match listed {
        Some(images) => images,
        None => {
            listing = store.store().await.map_err(OwnImageError::Engine)?;
            &listing
        }
    };
    let mut matching = images.iter().filter(|i| query.matches(&i.id));
    match (matching.next(), matching.next()) {
        (Some(image), None) => Ok(Some(image.id.clone())),
        (None, _) => Err(OwnImageError::Invalid(format!(
            "{OWN_IMAGE_VAR}=\"{value}\" names no image in the engine: nothing is pruned \
             while stowage cannot tell which image is its own"
        ))),
        (Some(_), Some(_)) => Err(OwnImageError::Invalid(format!(
            "{OWN_IMAGE_VAR}=\"{value}\" is the start of more than one image ID: give more \
             of it (`docker inspect -f '{{{{.Id}}}}' IMAGE` prints it whole)"
        ))),
    }
}

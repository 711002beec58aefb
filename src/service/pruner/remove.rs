//! One planned image removed exactly, in the order [`crate::decide::removal`] argues for: its
//! content-addressed names, then every tag but one (each looked at right before), then its ID.

use crate::decide::prune_plan::Candidate;
use crate::decide::removal::{is_planned, qualified, removal_order};
use crate::io::engine::Store;
use crate::model::failure::Failure;
use crate::model::image::{Deleted, ImageStore, LocalImage, qualified_id};
use crate::model::reference::repository;

/// What the engine did for one planned removal.
#[derive(Debug, Default)]
pub(super) struct Exact {
    /// Every DELETE's answer, in order.
    pub answers: Vec<Deleted>,
    /// Tags that named another image, or none, by the time they were looked at: left alone.
    pub moved: Vec<String>,
    /// Whether the planned image is gone.
    pub gone: bool,
    /// The answers to the DELETEs of its build steps, by step.
    pub steps: Vec<(String, Deleted)>,
    /// Why it stopped short, when it did.
    pub stop: Option<Stop>,
}

/// Why a removal stopped short.
#[derive(Debug)]
pub(super) enum Stop {
    /// The image gained a name since the plan (these): someone wants it, so it stays.
    GainedNames(Vec<String>),
    /// The engine refused, or could not be asked.
    Failed(Failure),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Stop::Failed(f)
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::GainedNames(names) => write!(
                f,
                "kept: it gained a name while being removed ({})",
                names.join(", ")
            ),
            Stop::Failed(failure) => write!(f, "{}", failure.detail),
        }
    }
}

impl Exact {
    /// Whether an answer so far deleted image `id`.
    fn deleted(&self, id: &str) -> bool {
        let id = qualified_id(id);
        self.answers
            .iter()
            .any(|a| a.images.iter().any(|i| qualified_id(i) == id))
    }
}

/// Removes image `c.id` and only it: never forced, parents never pruned, a tag only while it
/// still names the image, and the image itself by ID.
pub(super) async fn remove_exactly<S: Store>(store: &S, c: &Candidate) -> Exact {
    let mut exact = Exact::default();
    // A name it gained since the plan keeps it: someone wants it (a keep rule may match it,
    // and on some engines any first DELETE takes every name the image has then).
    let look = match no_name_gained(store, c).await {
        Ok(look) => look,
        Err(stop) => {
            exact.stop = Some(stop);
            return exact;
        }
    };
    if let Err(f) = remove_names(store, c, look, &mut exact).await {
        exact.stop = Some(Stop::Failed(f));
        return exact;
    }
    if !exact.deleted(&c.id)
        && let Err(stop) = remove_by_id(store, c, &mut exact).await
    {
        exact.stop = Some(stop);
    }
    exact.gone = exact.gone || exact.deleted(&c.id);
    if exact.gone {
        remove_steps(store, c, &mut exact).await;
    }
    exact
}

/// Step 4: the image's build steps, once it is gone, each by ID while it is still nameless.
/// The first that gained a name, or that the engine keeps (another image is built on it), ends
/// it: the steps above it are its base's too.
async fn remove_steps<S: Store>(store: &S, c: &Candidate, exact: &mut Exact) {
    for step in &c.steps {
        match store.image_named(step).await {
            Ok(Some(now)) if now.tags.is_empty() && now.digests.is_empty() => {}
            Ok(None) => continue,
            _ => return,
        }
        let Ok(answer) = store.delete(step).await else {
            return;
        };
        let gone = answer
            .images
            .iter()
            .any(|i| qualified_id(i) == qualified_id(step));
        exact.steps.push((step.clone(), answer));
        if !gone {
            return;
        }
    }
}

/// Steps 1 and 2: the `name@digest` references the engine keeps as names, then every tag but
/// the last that still names the image. `look` is the image as it was a moment ago.
async fn remove_names<S: Store>(
    store: &S,
    c: &Candidate,
    look: Option<LocalImage>,
    exact: &mut Exact,
) -> Result<(), Failure> {
    let (digests, tags) = removal_order(&c.references, &c.digest_names, store.image_store());
    let containerd = store.image_store() == ImageStore::Containerd;
    let sent = exact.answers.len();
    for name in digests {
        // There a DELETE of it would take a tag of its repository added since the plan: looked
        // at right before, as a tag is. A tag found leaves the reference, and the DELETE of the
        // ID is refused for the name gained.
        if containerd && tagged_in_repository(store, name, &c.id).await? {
            continue;
        }
        if !still_a_name_of(store, name, &c.id).await? {
            exact.moved.push(name.clone());
            continue;
        }
        exact.answers.push(store.delete(name).await?);
        if exact.deleted(&c.id) {
            return Ok(());
        }
    }
    // Which tags still name it: one look at the image's names, not one at each tag (a tag
    // names one image at an instant, so the two say the same; on Podman and the containerd
    // store, where every tag is removed by name, this was a third of a prune's requests). With
    // nothing removed since the look a moment ago, that look says it.
    let now = match exact.answers.len() == sent {
        true => look,
        false => store.image_named(&c.id).await?,
    };
    let named: Vec<String> = match now {
        Some(image) => image.tags.iter().map(|t| qualified(t)).collect(),
        None => Vec::new(),
    };
    let (mut still, moved): (Vec<&String>, Vec<&String>) = tags
        .into_iter()
        .partition(|tag| named.contains(&qualified(tag)));
    exact.moved.extend(moved.into_iter().cloned());
    // The last tag is the ID's to take (step 3).
    still.pop();
    for tag in still {
        // Looked at again right before: the first look may be a while ago.
        if !names_it(store, tag, &c.id).await? {
            exact.moved.push(tag.clone());
            continue;
        }
        exact.answers.push(store.delete(tag).await?);
        if exact.deleted(&c.id) {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether a tag of `name`'s repository names image `id` now.
async fn tagged_in_repository<S: Store>(store: &S, name: &str, id: &str) -> Result<bool, Failure> {
    let Some(image) = store.image_named(id).await? else {
        return Ok(false);
    };
    let repo = repository(&qualified(name)).to_owned();
    Ok(image.tags.iter().any(|t| repository(&qualified(t)) == repo))
}

/// Whether the `name@digest` `name` is still a name of image `id`, right before its DELETE.
/// One of a multi-platform index names the image pulled for one platform, and on Podman a pull
/// of the same digest for another platform moves the name to that image: its DELETE then took
/// the other image (found by an adversarial run on Podman 5.8). Podman's look at `name@digest`
/// finds any image with that content, not the one the name is on, so its list of the image is
/// asked (one more request, only for the names an image was pulled by). Docker's classic store
/// refuses such a pull ("Cannot overwrite digest"), and on the containerd store the image is
/// the index, whatever platforms it holds: there the name cannot move.
async fn still_a_name_of<S: Store>(store: &S, name: &str, id: &str) -> Result<bool, Failure> {
    if store.image_store() != ImageStore::Podman {
        return Ok(true);
    }
    let name = qualified(name);
    Ok(store
        .names_of(id)
        .await?
        .is_some_and(|image| image.digests.iter().any(|d| qualified(d) == name)))
}

/// Whether `name` names image `id` now.
async fn names_it<S: Store>(store: &S, name: &str, id: &str) -> Result<bool, Failure> {
    Ok(store
        .image_named(name)
        .await?
        .is_some_and(|i| qualified_id(&i.id) == qualified_id(id)))
}

/// Step 3: the image by its ID, which takes the names it has at that instant (its last tag), or
/// is refused: a name added meanwhile, a container, a child. A refusal names what it now has.
async fn remove_by_id<S: Store>(store: &S, c: &Candidate, exact: &mut Exact) -> Result<(), Stop> {
    // The DELETE of the ID takes the one tag the image has, whichever: looked at right before.
    no_name_gained(store, c).await?;
    match store.delete(&c.id).await {
        Ok(answer) => {
            exact.answers.push(answer);
            if !exact.deleted(&c.id) && store.image_named(&c.id).await?.is_none() {
                // Gone already, by someone else's hand.
                exact.gone = true;
            }
            Ok(())
        }
        Err(refused) => {
            // Every name it has: Podman refuses an ID with a `name@digest` its look hides.
            let Some(now) = store.names_of(&c.id).await? else {
                return Ok(());
            };
            let gained = gained_names(&now, &names_planned(c), store.image_store());
            if gained.is_empty() {
                return Err(Stop::Failed(refused));
            }
            Err(Stop::GainedNames(gained))
        }
    }
}

/// Fails when image `c` has a name now that its plan did not list; else the image as it is
/// now (`None`: gone).
async fn no_name_gained<S: Store>(store: &S, c: &Candidate) -> Result<Option<LocalImage>, Stop> {
    let Some(now) = store.image_named(&c.id).await? else {
        return Ok(None);
    };
    let planned: Vec<String> = c.references.iter().map(|n| qualified(n)).collect();
    let gained = gained_names(&now, &planned, store.image_store());
    if gained.is_empty() {
        Ok(Some(now))
    } else {
        Err(Stop::GainedNames(gained))
    }
}

/// The names planned image `c` had: its tags and the `name@digest` references the engine kept
/// as names (as [`Store::names_of`] shows them).
fn names_planned(c: &Candidate) -> Vec<String> {
    c.references
        .iter()
        .filter(|r| !r.contains('@'))
        .chain(&c.digest_names)
        .map(|n| qualified(n))
        .collect()
}

/// The names `image` has now that are not among the `planned` ones. On the containerd store a
/// `repository@digest` is also planned as the content's digest in a repository the plan names
/// the image in ([`is_planned`]): that store lists one an image, and shows one per repository
/// of its tags when asked about it. Elsewhere a `name@digest` the plan did not list is one
/// someone pulled since: a name gained.
fn gained_names(image: &LocalImage, planned: &[String], store: ImageStore) -> Vec<String> {
    image
        .tags
        .iter()
        .chain(&image.digests)
        .map(|n| qualified(n))
        .filter(|n| match store {
            ImageStore::Containerd => !is_planned(n, planned),
            ImageStore::Classic | ImageStore::Podman => !planned.contains(n),
        })
        .collect()
}

//! Removing exactly the planned image, and nothing else: which names may be removed by name,
//! and what the engine's answers show it took that the plan did not name. Pure.
//!
//! Between a plan and its DELETE the store moves: a tag is pulled or rebuilt onto another
//! image, a name is added, a parent loses its tag. The engine's DELETE of a tag removes
//! whatever the tag names at that instant (and, on Docker, the image with it when that was its
//! last name), so a removal by name is a compare-and-delete only as good as the look right
//! before it. A DELETE of an ID is exact: the engine removes the names that image has under its
//! own lock, and refuses when it has more than one tag. So a removal goes:
//! 1. its `name@digest` references, content-addressed (on Podman one of a multi-platform index
//!    can move to the image pulled for another platform: looked at right before);
//! 2. every tag but one, each by name after a look that it still names the image;
//! 3. the image by its ID, which takes the last tag, or refuses because a name was added.
//!
//! Whatever happened in the instants between, every answer is read: an image deleted that is
//! not the planned one, or a name removed that the plan did not list, was taken against the
//! plan, and is reported and put back where it can be ([`taken_against_plan`]).

use crate::model::image::{Deleted, ImageStore, qualified_id};
use crate::model::reference::ImageRef;
use crate::model::reference::repository;

/// What a removal took that its plan did not name: an image, or names, or both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Taken {
    /// The image deleted against the plan, when one was (`None`: only names were removed, from
    /// the planned image).
    pub image: Option<String>,
    /// The names removed with it (or from the planned image) against the plan.
    pub names: Vec<String>,
    /// The names were another image's, which the engine left in place (`image` is `None`): a
    /// tag moved onto it in the instant between its last look and its DELETE, and Docker's
    /// DELETE of a repository's last tag takes that repository's `name@digest` references
    /// with it. Known by those references: their content is not the planned image's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub another: bool,
}

impl Taken {
    /// Image `id`, deleted against the plan, with `names`.
    fn deleted(id: &str, names: Vec<String>) -> Self {
        Taken {
            image: Some(id.to_owned()),
            names,
            another: false,
        }
    }

    /// Its `name@digest` references: what it can be pulled back by.
    pub(crate) fn digests(&self) -> impl Iterator<Item = &String> {
        self.names.iter().filter(|n| n.contains('@'))
    }

    /// Its tags: what is pointed at it again once it is back.
    pub(crate) fn tags(&self) -> impl Iterator<Item = &String> {
        self.names.iter().filter(|n| !n.contains('@'))
    }
}

/// A planned image's names to remove by name, in that order: its `name@digest` references
/// first (content-addressed), then its tags. Of the references, only those the engine keeps as
/// names (`digest_names`: Podman lists others it answers "tag not known" for); on the
/// containerd store, of those only the [`untagged_repositories`]. The last tag is not removed
/// by name: the DELETE of the image's ID takes it.
pub(crate) fn removal_order<'d, 'r>(
    references: &'r [String],
    digest_names: &'d [String],
    store: ImageStore,
) -> (Vec<&'d String>, Vec<&'r String>) {
    let tags: Vec<&String> = references.iter().filter(|r| !r.contains('@')).collect();
    let digests: Vec<&String> = digest_names.iter().collect();
    match store {
        ImageStore::Containerd => (untagged_repositories(&digests, &tags), tags),
        ImageStore::Classic | ImageStore::Podman => (digests, tags),
    }
}

/// On the containerd store, the `name@digest` references to remove by name: those of
/// repositories where the plan names no tag of the image. There the DELETE of a `name@digest`
/// takes every record of its repository naming the image, tags included (one added a moment
/// ago too), so a repository with a planned tag is left to the tag steps; but the DELETE of the
/// ID is refused while the image is named in more than one repository ("referenced in multiple
/// repositories": an image pulled through a mirror, with its origin's names too), so the
/// others must go by name first.
pub(crate) fn untagged_repositories<'a>(
    digests: &[&'a String],
    tags: &[&String],
) -> Vec<&'a String> {
    let tagged: Vec<String> = tags
        .iter()
        .map(|t| repository(&qualified(t)).to_owned())
        .collect();
    digests
        .iter()
        .filter(|d| !tagged.iter().any(|r| r == repository(&qualified(d))))
        .copied()
        .collect()
}

/// A name as the planner writes it: fully qualified (`docker.io/library/alpine:latest`), as the
/// engine's answers may not be (Docker answers `alpine:latest`).
pub(crate) fn qualified(name: &str) -> String {
    name.parse::<ImageRef>()
        .map_or_else(|_| name.to_owned(), |r| r.to_string())
}

/// Whether the (fully qualified) `name` is one of `planned`. A tag by its name. A
/// `repository@digest` by its name, or as the content's digest in a repository the plan names
/// the image in: the containerd store lists one `repository@digest` in all but shows one per
/// repository of its tags when asked about the image. The same content under a repository the
/// plan does not name (pulled by digest as `keeper@...`) is a name it gained.
pub(crate) fn is_planned(name: &str, planned: &[String]) -> bool {
    if planned.iter().any(|p| p == name) {
        return true;
    }
    let Some((repo, digest)) = name.split_once('@') else {
        return false;
    };
    let has_content = planned
        .iter()
        .any(|p| p.split_once('@').is_some_and(|(_, d)| d == digest));
    has_content && planned.iter().any(|p| repository(p) == repo)
}

/// What the answers to the DELETEs of one planned removal (of image `planned`, whose names were
/// `planned_names`) show was taken against the plan.
///
/// With parents never pruned, one DELETE acts on one image: the one its name named then. So an
/// answer that deleted another image took that image and every name it removed; an engine that
/// prunes parents anyway (Podman 4 ignores `noprune`) lists them after it, and they are taken
/// too. An answer that deleted nothing else took from the planned image only names the plan did
/// not list (added while it was being removed).
pub(crate) fn taken_against_plan(
    planned: &str,
    planned_names: &[String],
    answers: &[Deleted],
) -> Vec<Taken> {
    let planned = qualified_id(planned);
    let planned_names: Vec<String> = planned_names.iter().map(|n| qualified(n)).collect();
    let mut taken = Vec::new();
    for answer in answers {
        let names: Vec<String> = answer.untagged.iter().map(|n| qualified(n)).collect();
        let deleted: Vec<String> = answer.images.iter().map(|i| qualified_id(i)).collect();
        let others: Vec<&String> = deleted.iter().filter(|i| **i != planned).collect();
        let deleted_planned = deleted.contains(&planned);
        match others.split_first() {
            // The name named another image: all it removed was that image's.
            Some((first, rest)) if !deleted_planned => {
                taken.push(Taken::deleted(first, names));
                taken.extend(rest.iter().map(|i| Taken::deleted(i, Vec::new())));
            }
            // The planned image went, and parents with it.
            Some(_) => {
                taken.extend(others.iter().map(|i| Taken::deleted(i, Vec::new())));
                push_unplanned_names(&mut taken, &names, &planned_names);
            }
            // Its tag had moved onto another image, which lost it and that repository's
            // digest references: all the answer removed was that image's.
            None if names_another(&names, &planned_names) => taken.push(Taken {
                image: None,
                names,
                another: true,
            }),
            None => push_unplanned_names(&mut taken, &names, &planned_names),
        }
    }
    taken
}

/// What one planned removal did, read from all its answers: the names removed, the build
/// steps deleted, and what was taken against the plan.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Audit {
    /// Every name the engine said it removed, fully qualified.
    pub untagged: Vec<String>,
    /// The build steps deleted.
    pub steps_removed: Vec<String>,
    /// What was taken against the plan.
    pub taken: Vec<Taken>,
}

/// Reads the answers to the DELETEs of planned image `planned` (its names `planned_names`)
/// and to those of its build `steps` (each step with its answer).
pub(crate) fn audit(
    planned: &str,
    planned_names: &[String],
    answers: &[Deleted],
    steps: &[(String, Deleted)],
) -> Audit {
    let mut audit = Audit {
        untagged: answers
            .iter()
            .flat_map(|a| a.untagged.iter().map(|n| qualified(n)))
            .collect(),
        steps_removed: Vec::new(),
        taken: taken_against_plan(planned, planned_names, answers),
    };
    for (step, answer) in steps {
        // Whatever a step's DELETE took, it took from the step (or another image), never from
        // the planned image.
        audit.taken.extend(
            taken_against_plan(step, &[], std::slice::from_ref(answer))
                .into_iter()
                .map(|t| match t.image {
                    Some(_) => t,
                    // A step goes by its ID: whatever the answer took, it took from the step.
                    None => Taken::deleted(step, t.names),
                }),
        );
        if answer
            .images
            .iter()
            .any(|i| qualified_id(i) == qualified_id(step))
        {
            audit.steps_removed.push(step.clone());
        }
    }
    audit
}

/// Whether an answer that deleted no image removed a `name@digest` reference to content the
/// planned image does not have: then its DELETE acted on another image. The planned image's
/// content is known by the digest references its plan lists; one that has none (a local
/// build) has no content another image's reference could be mistaken for, bar a push in that
/// very instant, and then putting the reference back is the safe mistake.
fn names_another(names: &[String], planned_names: &[String]) -> bool {
    let content = |n: &String| n.split_once('@').map(|(_, d)| d.to_owned());
    let planned: Vec<String> = planned_names.iter().filter_map(content).collect();
    names
        .iter()
        .filter_map(content)
        .any(|d| !planned.contains(&d))
}

/// Names removed from the planned image that its plan did not list.
fn push_unplanned_names(taken: &mut Vec<Taken>, names: &[String], planned_names: &[String]) {
    let unplanned: Vec<String> = names
        .iter()
        .filter(|n| !is_planned(n, planned_names))
        .cloned()
        .collect();
    if !unplanned.is_empty() {
        taken.push(Taken {
            image: None,
            names: unplanned,
            another: false,
        });
    }
}

/// Whether the engine refused a removal because a container uses the image: the words of
/// Docker's classic store ("container 3f2a is using its referenced image 1b9c"), its
/// containerd store ("image is being used by running container") and Podman ("image is in use
/// by a container"). Such a refusal is the protection working: the image stays, and is kept.
pub(crate) fn refused_for_a_container(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "is using its referenced image",
        "is being used by",
        "in use by a container",
    ]
    .iter()
    .any(|words| d.contains(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(untagged: &[&str], images: &[&str]) -> Deleted {
        Deleted {
            untagged: untagged.iter().map(|s| s.to_string()).collect(),
            images: images.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_planned_image_and_its_names_are_not_taken() {
        let planned = names(&["r:1/app:1", "r:1/app@sha256:aa"]);
        let answers = [
            answer(&["r:1/app@sha256:aa"], &[]),
            answer(&["r:1/app:1"], &["sha256:x"]),
        ];
        assert!(taken_against_plan("sha256:x", &planned, &answers).is_empty());
    }

    #[test]
    fn a_tag_that_moved_takes_the_other_image_and_all_its_names() {
        let planned = names(&["r:1/app:1"]);
        let answers = [answer(&["r:1/app:1", "r:1/app@sha256:yy"], &["sha256:y"])];
        assert_eq!(
            taken_against_plan("sha256:x", &planned, &answers),
            [Taken::deleted(
                "sha256:y",
                names(&["r:1/app:1", "r:1/app@sha256:yy"])
            )]
        );
    }

    #[test]
    fn a_tag_that_moved_onto_a_named_image_takes_its_names_not_the_planned_ones() {
        // app:1 moved onto Y (which has another tag) just before its DELETE: Docker removed it
        // from Y with Y's digest in that repository, and deleted no image.
        let planned = names(&["r:1/app:1", "r:1/app:2", "r:1/app@sha256:xx"]);
        let answers = [answer(&["r:1/app:1", "r:1/app@sha256:yy"], &[])];
        assert_eq!(
            taken_against_plan("sha256:x", &planned, &answers),
            [Taken {
                image: None,
                names: names(&["r:1/app:1", "r:1/app@sha256:yy"]),
                another: true,
            }]
        );
        // The planned image's own digest, in a repository it lost its last tag of: its own.
        let answers = [answer(&["r:1/app:1", "r:1/app@sha256:xx"], &[])];
        assert!(taken_against_plan("sha256:x", &planned, &answers).is_empty());
        // A local build has no content to tell by: a digest in the answer is put back.
        let answers = [answer(&["r:1/app:1", "r:1/app@sha256:yy"], &[])];
        assert!(taken_against_plan("sha256:x", &names(&["r:1/app:1"]), &answers)[0].another);
    }

    #[test]
    fn parents_an_engine_prunes_anyway_are_taken() {
        // Podman 4 ignores noprune, and writes IDs without their algorithm.
        let answers = [answer(&["r:1/c:1"], &["cc", "pp"])];
        assert_eq!(
            taken_against_plan("sha256:cc", &names(&["r:1/c:1"]), &answers),
            [Taken::deleted("sha256:pp", vec![])]
        );
    }

    #[test]
    fn a_name_added_during_the_removal_is_taken_from_the_planned_image() {
        // Docker answers Docker Hub names in their familiar form.
        let planned = names(&["docker.io/library/app:1"]);
        let answers = [answer(&["app:1", "app:new"], &["sha256:x"])];
        assert_eq!(
            taken_against_plan("sha256:x", &planned, &answers),
            [Taken {
                image: None,
                names: names(&["docker.io/library/app:new"]),
                another: false,
            }]
        );
    }

    #[test]
    fn a_step_s_answers_are_its_own() {
        let steps = [
            ("sha256:s1".to_owned(), answer(&[], &["s1"])),
            // A name it gained in the instant before its DELETE went with it.
            (
                "sha256:s2".to_owned(),
                answer(&["r:1/k:prod"], &["sha256:s2"]),
            ),
        ];
        let audit = audit("sha256:x", &[], &[answer(&[], &["sha256:x"])], &steps);
        assert_eq!(audit.steps_removed, ["sha256:s1", "sha256:s2"]);
        assert_eq!(
            audit.taken,
            [Taken::deleted("sha256:s2", names(&["r:1/k:prod"]))]
        );
    }

    /// The order on `store` of `refs` whose `name@digest` references are all names.
    fn order(refs: &[String], store: ImageStore) -> (Vec<String>, Vec<&String>) {
        let digests: Vec<String> = refs.iter().filter(|r| r.contains('@')).cloned().collect();
        let (d, t) = removal_order(refs, &digests, store);
        (d.into_iter().cloned().collect(), t)
    }

    #[test]
    fn on_containerd_only_digests_of_untagged_repositories_go_by_name() {
        // Pulled through a mirror, named by the origin's tag and digest too.
        let refs = names(&[
            "r:1/a:1",
            "r:1/a@sha256:aa",
            "m:2/a@sha256:aa",
            "m:2/proxy/a@sha256:aa",
        ]);
        assert_eq!(
            order(&refs, ImageStore::Containerd).0,
            [refs[2].clone(), refs[3].clone()],
            "the origin's repository has a planned tag: its digest goes with the tag"
        );
        assert_eq!(order(&refs, ImageStore::Classic).0.len(), 3);
        // No tag at all (dangling in two repositories): every digest goes by name.
        let dangling = names(&["r:1/a@sha256:aa", "m:2/a@sha256:aa"]);
        assert_eq!(order(&dangling, ImageStore::Containerd).0.len(), 2);
        // Docker Hub's short names are the same repository as their qualified form.
        let hub = names(&["alpine:3", "docker.io/library/alpine@sha256:aa"]);
        assert!(order(&hub, ImageStore::Containerd).0.is_empty());
    }

    #[test]
    fn only_the_digests_the_engine_keeps_as_names_go_by_name() {
        // Podman, pulled by tag in two repositories and by digest in a third: it lists a
        // digest for each, and keeps only the third as a name.
        let refs = names(&[
            "r:1/a@sha256:aa",
            "r:1/b@sha256:aa",
            "r:1/c@sha256:aa",
            "r:1/a:1",
            "r:1/b:1",
        ]);
        let kept = names(&["r:1/c@sha256:aa"]);
        let (digests, tags) = removal_order(&refs, &kept, ImageStore::Podman);
        assert_eq!(digests, [&kept[0]]);
        assert_eq!(tags, [&refs[3], &refs[4]]);
        // Pulled by tag only: no name is a digest, only tags are removed by name.
        let (digests, _) = removal_order(&refs, &[], ImageStore::Podman);
        assert!(digests.is_empty());
    }

    #[test]
    fn a_digest_is_planned_in_the_repositories_the_plan_names() {
        // Listed with a tag in two repositories and one digest name (the containerd store).
        let planned = names(&["r:1/a:1", "r:1/b:1", "r:1/b@sha256:aa"]);
        assert!(is_planned("r:1/a:1", &planned));
        assert!(is_planned("r:1/a@sha256:aa", &planned));
        assert!(!is_planned("r:1/c:1", &planned));
        // The same content pulled under another repository: a name it gained.
        assert!(!is_planned("r:1/keeper@sha256:aa", &planned));
        assert!(!is_planned("r:1/a@sha256:bb", &planned));
    }

    #[test]
    fn names_are_removed_content_addressed_first() {
        let refs = names(&["r:1/a:1", "r:1/a@sha256:aa", "r:1/a:2"]);
        let (digests, tags) = order(&refs, ImageStore::Classic);
        assert_eq!(digests, [refs[1].clone()]);
        assert_eq!(tags, [&refs[0], &refs[2]]);
    }

    #[test]
    fn a_refusal_for_a_container_is_told_from_other_refusals() {
        for words in [
            "the engine refused: conflict: unable to remove repository reference \"r/a:1\" \
             (must force) - container 3f2a1b is using its referenced image 1b9c2d",
            "the engine refused: conflict: unable to delete 1b9c2d (cannot be forced) - image \
             is being used by running container 3f2a1b",
            "the engine refused: conflict: unable to delete 1b9c2d (must be forced) - image is \
             being used by stopped container 3f2a1b",
            "image used by 36bf: image is in use by a container",
        ] {
            assert!(refused_for_a_container(words), "{words}");
        }
        for words in [
            "the engine refused: conflict: unable to delete 1b9c2d (must be forced) - image is \
             referenced in multiple repositories",
            "the engine refused: conflict: unable to delete 1b9c2d (cannot be forced) - image \
             has dependent child images",
            "",
        ] {
            assert!(!refused_for_a_container(words), "{words}");
        }
    }
}

//! Deciding what to remove from the image store: a pure function over plain data.
//!
//! The order of the checks is the safety argument. First every image gets its protections
//! (required or pinned, used by a container in any state, being pulled, the daemon's own, too
//! young, kept by a rule, a parent of something kept). Only unprotected images can be selected
//! at all, by the rules (dangling, unused too long, disk watermark, store size cap), least
//! recently used first, children before parents, at most `max_removals` per cycle.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

/// An image in the store, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreImage {
    /// Image ID.
    pub id: String,
    /// Parent image ID (locally built images have one), if any.
    pub parent: Option<String>,
    /// Fully qualified tags.
    pub tags: Vec<String>,
    /// Fully qualified repository digests (`name@sha256:...`).
    pub digests: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Size in bytes.
    pub size: u64,
    /// Creation time (seconds since the epoch), from the image config.
    pub created: i64,
}

/// What stowage knows about images over time (from the state file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// When stowage first saw each image (seconds).
    pub first_seen: HashMap<String, i64>,
    /// When a container last used each image (seconds).
    pub last_used: HashMap<String, i64>,
    /// Since when stowage has been watching this host (seconds).
    pub watching_since: i64,
}

/// The keep rules an operator wrote.
#[derive(Debug, Clone, Default)]
pub struct KeepRules {
    /// Matchers on fully qualified names (globs or regexes, compiled).
    pub names: Vec<NameMatcher>,
    /// Repository digests (`sha256:...`) to keep.
    pub digests: HashSet<String>,
    /// Labels: `key` (any value) or `key=value`.
    pub labels: Vec<(String, Option<String>)>,
    /// Keep the N newest images of each repository.
    pub newest_per_repository: usize,
    /// Remove tagged images that exist nowhere else (no repository digest) too.
    pub prune_local_only: bool,
}

/// A compiled name matcher: what the operator wrote, and how it matches.
#[derive(Debug, Clone)]
pub struct NameMatcher {
    /// As written, for the plan's "kept by keep rule ..." line.
    pub written: String,
    /// The compiled expression.
    pub regex: regex::Regex,
}

/// Thresholds and limits of a cycle.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// No image first seen less than this long ago is removed (seconds).
    pub min_age: i64,
    /// Dangling images older than this are removed (seconds; `None`: never by age).
    pub dangling_min_age: Option<i64>,
    /// Unused tagged images not used for this long are removed (seconds; `None`: never).
    pub unused_max_age: Option<i64>,
    /// Disk use (percent of the data root's filesystem) above which LRU removal starts.
    pub high_watermark: Option<f64>,
    /// ... and the use it brings the disk back under.
    pub low_watermark: Option<f64>,
    /// Upper bound of the store's total size, bytes.
    pub max_store_size: Option<u64>,
    /// At most this many removals per cycle.
    pub max_removals: usize,
}

/// The filesystem holding the engine's data root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disk {
    /// Total bytes.
    pub total: u64,
    /// Used bytes.
    pub used: u64,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Default)]
pub struct PruneInput {
    /// The store.
    pub images: Vec<StoreImage>,
    /// IDs of images some container (running, stopped or created) references.
    pub in_use: HashSet<String>,
    /// IDs of images required or pinned by the config.
    pub required: HashSet<String>,
    /// What is being pulled or re-tagged right now: fully qualified names, manifest digests,
    /// and the IDs of images about to be re-tagged.
    pub in_flight: HashSet<String>,
    /// The daemon's own image ID, when it runs in a container.
    pub own_image: Option<String>,
    /// Usage history.
    pub usage: Usage,
    /// The data root's filesystem, when known.
    pub disk: Option<Disk>,
    /// Now (seconds).
    pub now: i64,
    /// IDs of tagged images whose repository digests were checked with their registries and
    /// found nowhere: local only, whatever digests the engine lists. On the containerd image
    /// store and Podman a local build lists repository digests too.
    pub no_registry_copy: HashSet<String>,
}

/// Why an image stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "protection", content = "detail")]
pub enum Protection {
    /// The config requires or pins it.
    Required,
    /// A container references it.
    InUse,
    /// A pull of one of its names is under way.
    InFlight,
    /// It is the daemon's own image.
    OwnImage,
    /// First seen less than `min_age` ago.
    TooYoung,
    /// A keep rule matches (the rule, as written).
    KeepRule(String),
    /// Among the newest of its repository.
    Newest,
    /// Tagged, built here, no copy in any registry.
    LocalOnly,
    /// A kept image is built on it.
    ParentOfKept,
    /// No rule selects it.
    NotSelected,
}

impl Protection {
    /// Its name as `--json` output writes it (`in-use`, `keep-rule`, ...).
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["protection"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Which rule selects an image for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Dangling (untagged) and older than `dangling_min_age`.
    Dangling,
    /// Unused for longer than `unused_max_age`.
    UnusedMaxAge,
    /// The disk is above the high watermark.
    DiskWatermark,
    /// The store is above `max_store_size`.
    StoreSize,
}

impl Rule {
    /// Its name as `--json` output writes it (`dangling`, `unused-max-age`, ...).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// An image the cycle removes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Image ID.
    pub id: String,
    /// Its names (tags, else digests).
    pub names: Vec<String>,
    /// Every reference to it, tags and digests: each is removed by name, never forced, so an
    /// image with several names goes without `--force` (and one a container just started
    /// using is refused, not untagged).
    #[serde(skip)]
    pub references: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// When last used (or first seen, or created), seconds.
    pub last_used: i64,
    /// The rule that selects it.
    pub rule: Rule,
}

/// An image the cycle keeps, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Image ID.
    pub id: String,
    /// Its names.
    pub names: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Why it stays.
    #[serde(flatten)]
    pub protection: Protection,
}

/// The plan of one cycle.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrunePlan {
    /// What to remove, in removal order (children before parents, LRU first).
    pub remove: Vec<Candidate>,
    /// What stays, and why.
    pub keep: Vec<Kept>,
    /// Bytes the removals are expected to free.
    pub bytes_expected: u64,
    /// Candidates left for a later cycle by `max_removals`.
    pub deferred: usize,
}

fn names(image: &StoreImage) -> Vec<String> {
    if image.tags.is_empty() {
        image.digests.clone()
    } else {
        image.tags.clone()
    }
}

/// Repository of a fully qualified `name:tag` or `name@digest`.
/// Whether the image `id`, with these names (tags and `repository@digest`s), is part of a pull
/// or re-tag under way: the image a re-tag will name, a pull of one of its names, or of its
/// content under any name (a pull by digest from another registry or a mirror fetches the very
/// image the store already holds).
pub fn being_pulled<'a>(
    id: &str,
    mut names: impl Iterator<Item = &'a String>,
    in_flight: &HashSet<String>,
) -> bool {
    !in_flight.is_empty()
        && (in_flight.contains(id)
            || names.any(|n| {
                in_flight.contains(n)
                    || n.split_once('@')
                        .is_some_and(|(_, digest)| in_flight.contains(digest))
            }))
}

fn repository(name: &str) -> &str {
    if let Some((repo, _)) = name.split_once('@') {
        return repo;
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// When an image was last used, as far as stowage knows: a recorded use, else first seen,
/// else its creation time.
fn last_use(image: &StoreImage, usage: &Usage) -> i64 {
    usage
        .last_used
        .get(&image.id)
        .or_else(|| usage.first_seen.get(&image.id))
        .copied()
        .unwrap_or(image.created)
}

/// Plans one cycle.
pub fn plan_prune(input: &PruneInput, keep: &KeepRules, limits: &Limits) -> PrunePlan {
    let by_id: HashMap<&str, &StoreImage> =
        input.images.iter().map(|i| (i.id.as_str(), i)).collect();

    // Newest per repository, by creation time.
    let mut newest: HashSet<&str> = HashSet::new();
    if keep.newest_per_repository > 0 {
        let mut repos: HashMap<&str, Vec<&StoreImage>> = HashMap::new();
        for image in &input.images {
            let mut seen = HashSet::new();
            for t in &image.tags {
                let r = repository(t);
                if seen.insert(r) {
                    repos.entry(r).or_default().push(image);
                }
            }
        }
        for list in repos.values_mut() {
            list.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
            newest.extend(
                list.iter()
                    .take(keep.newest_per_repository)
                    .map(|i| i.id.as_str()),
            );
        }
    }

    // First pass: protections of the image itself.
    let mut protection: HashMap<&str, Protection> = HashMap::new();
    for image in &input.images {
        let first_seen = input
            .usage
            .first_seen
            .get(&image.id)
            .copied()
            .unwrap_or(input.now);
        let all_names = || image.tags.iter().chain(image.digests.iter());
        // The first protection that holds is the one reported: the most specific first (the
        // daemon's own container also uses its image, but "own image" says more).
        let p = if input.required.contains(&image.id) {
            Some(Protection::Required)
        } else if input.own_image.as_deref() == Some(image.id.as_str()) {
            Some(Protection::OwnImage)
        } else if input.in_use.contains(&image.id) {
            Some(Protection::InUse)
        } else if being_pulled(&image.id, all_names(), &input.in_flight) {
            Some(Protection::InFlight)
        } else if input.now - first_seen < limits.min_age {
            Some(Protection::TooYoung)
        } else if let Some(m) = keep
            .names
            .iter()
            .find(|m| all_names().any(|n| m.regex.is_match(n)))
        {
            Some(Protection::KeepRule(m.written.clone()))
        } else if let Some(d) = image.digests.iter().find_map(|d| {
            let digest = d.split_once('@').map(|(_, d)| d)?;
            keep.digests.contains(digest).then_some(digest)
        }) {
            Some(Protection::KeepRule(d.to_owned()))
        } else if let Some((k, v)) = keep.labels.iter().find(|(k, v)| {
            image
                .labels
                .get(k)
                .is_some_and(|actual| v.as_ref().is_none_or(|v| v == actual))
        }) {
            Some(Protection::KeepRule(match v {
                Some(v) => format!("label {k}={v}"),
                None => format!("label {k}"),
            }))
        } else if newest.contains(image.id.as_str()) {
            Some(Protection::Newest)
        } else if !keep.prune_local_only
            && !image.tags.is_empty()
            && (image.digests.is_empty() || input.no_registry_copy.contains(&image.id))
        {
            Some(Protection::LocalOnly)
        } else {
            None
        };
        if let Some(p) = p {
            protection.insert(image.id.as_str(), p);
        }
    }
    // Second pass: every ancestor of a protected image is protected too (the engine refuses
    // to remove a parent whose child stays, and it would free nothing).
    let protected_ids: Vec<&str> = protection.keys().copied().collect();
    for id in protected_ids {
        let mut cur = by_id.get(id).and_then(|i| i.parent.as_deref());
        while let Some(parent) = cur {
            if protection.contains_key(parent) {
                break;
            }
            protection.insert(parent, Protection::ParentOfKept);
            cur = by_id.get(parent).and_then(|i| i.parent.as_deref());
        }
    }

    // Selection by age rules.
    let mut selected: HashMap<&str, Rule> = HashMap::new();
    let watched = input.now - input.usage.watching_since;
    for image in &input.images {
        if protection.contains_key(image.id.as_str()) {
            continue;
        }
        let first_seen = input
            .usage
            .first_seen
            .get(&image.id)
            .copied()
            .unwrap_or(input.now);
        if image.tags.is_empty() {
            if let Some(age) = limits.dangling_min_age
                && input.now - first_seen >= age
            {
                selected.insert(image.id.as_str(), Rule::Dangling);
            }
        } else if let Some(max_age) = limits.unused_max_age
            // A max age applies only after stowage has watched that long: a lost state file
            // must not turn every image into an old one.
            && watched >= max_age
            && input.now - last_use(image, &input.usage) >= max_age
        {
            selected.insert(image.id.as_str(), Rule::UnusedMaxAge);
        }
    }

    // Space rules: least recently used first, until under the low watermark and the cap.
    let store_size: u64 = input.images.iter().map(|i| i.size).sum();
    let mut freed: u64 = selected
        .keys()
        .filter_map(|id| by_id.get(id))
        .map(|i| i.size)
        .sum();
    let over = |freed: u64| -> Option<Rule> {
        if let (Some(disk), Some(high), Some(low)) =
            (input.disk, limits.high_watermark, limits.low_watermark)
            && disk.total > 0
        {
            let used_pct = |used: u64| used as f64 * 100.0 / disk.total as f64;
            // Triggered above the high mark; once triggered, goes on down to the low mark.
            if used_pct(disk.used) > high && used_pct(disk.used.saturating_sub(freed)) > low {
                return Some(Rule::DiskWatermark);
            }
        }
        if let Some(cap) = limits.max_store_size
            && store_size.saturating_sub(freed) > cap
        {
            return Some(Rule::StoreSize);
        }
        None
    };
    if over(freed).is_some() {
        let mut lru: Vec<&StoreImage> = input
            .images
            .iter()
            .filter(|i| {
                !protection.contains_key(i.id.as_str()) && !selected.contains_key(i.id.as_str())
            })
            .collect();
        lru.sort_by(|a, b| {
            last_use(a, &input.usage)
                .cmp(&last_use(b, &input.usage))
                .then(a.id.cmp(&b.id))
        });
        for image in lru {
            let Some(rule) = over(freed) else { break };
            selected.insert(image.id.as_str(), rule);
            freed += image.size;
        }
    }

    // Removal order: children before parents, then least recently used first.
    let depth = |id: &str| {
        let mut d = 0usize;
        let mut cur = by_id.get(id).and_then(|i| i.parent.as_deref());
        while let Some(p) = cur {
            d += 1;
            if d > input.images.len() {
                break; // a cycle in parent links: give up counting, never loop forever
            }
            cur = by_id.get(p).and_then(|i| i.parent.as_deref());
        }
        d
    };
    let mut remove: Vec<Candidate> = selected
        .iter()
        .filter_map(|(id, rule)| by_id.get(id).map(|i| (i, *rule)))
        .map(|(i, rule)| Candidate {
            id: i.id.clone(),
            names: names(i),
            // Tags last: the engine guards the last name of an image a container uses, and on
            // Podman a `name@digest` is a name too. Removing a tag first there would leave an
            // image a container created meanwhile uses without its tag, the removal refused.
            references: i.digests.iter().chain(i.tags.iter()).cloned().collect(),
            size: i.size,
            last_used: last_use(i, &input.usage),
            rule,
        })
        .collect();
    remove.sort_by(|a, b| {
        depth(&b.id)
            .cmp(&depth(&a.id))
            .then(a.last_used.cmp(&b.last_used))
            .then(a.id.cmp(&b.id))
    });
    let deferred = remove.len().saturating_sub(limits.max_removals);
    remove.truncate(limits.max_removals);
    // A parent whose child stays (deferred, or dropped here) cannot go this cycle either; one
    // dropped parent can make its own parent drop in turn, so repeat until nothing changes.
    let before = remove.len();
    let mut removing: HashSet<String> = remove.iter().map(|c| c.id.clone()).collect();
    loop {
        let child_stays = |id: &str| {
            input
                .images
                .iter()
                .any(|i| i.parent.as_deref() == Some(id) && !removing.contains(&i.id))
        };
        let count = remove.len();
        remove.retain(|c| !child_stays(&c.id));
        if remove.len() == count {
            break;
        }
        removing = remove.iter().map(|c| c.id.clone()).collect();
    }
    let deferred = deferred + (before - remove.len());

    let keep_list: Vec<Kept> = input
        .images
        .iter()
        .filter(|i| !removing.contains(&i.id))
        .map(|i| Kept {
            id: i.id.clone(),
            names: names(i),
            size: i.size,
            protection: protection
                .get(i.id.as_str())
                .cloned()
                .unwrap_or(Protection::NotSelected),
        })
        .collect();
    PrunePlan {
        bytes_expected: remove.iter().map(|c| c.size).sum(),
        remove,
        keep: keep_list,
        deferred,
    }
}

/// Compiles a keep pattern: `regex:...` is a regular expression, anything else a glob where
/// `*` matches within a path segment, `**` across segments, `?` one character. Both match the
/// whole fully qualified name.
pub fn compile_keep(pattern: &str) -> Result<NameMatcher, String> {
    let source = match pattern.strip_prefix("regex:") {
        Some(re) => format!("^(?:{re})$"),
        None => {
            let mut re = String::from("^");
            let mut chars = pattern.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '*' if chars.peek() == Some(&'*') => {
                        chars.next();
                        re.push_str(".*");
                    }
                    '*' => re.push_str("[^/]*"),
                    '?' => re.push_str("[^/]"),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            re
        }
    };
    regex::Regex::new(&source)
        .map(|regex| NameMatcher {
            written: pattern.to_owned(),
            regex,
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn image(id: &str, tags: &[&str], size: u64, created: i64) -> StoreImage {
        StoreImage {
            id: id.into(),
            parent: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: tags
                .iter()
                .map(|t| format!("{}@sha256:{id}", repository(t)))
                .collect(),
            labels: BTreeMap::new(),
            size,
            created,
        }
    }

    fn input(images: Vec<StoreImage>) -> PruneInput {
        let mut usage = Usage {
            watching_since: NOW - 100 * DAY,
            ..Usage::default()
        };
        for i in &images {
            usage.first_seen.insert(i.id.clone(), i.created);
        }
        PruneInput {
            images,
            usage,
            now: NOW,
            ..PruneInput::default()
        }
    }

    fn limits() -> Limits {
        Limits {
            min_age: DAY,
            dangling_min_age: Some(DAY),
            unused_max_age: Some(30 * DAY),
            max_removals: 100,
            ..Limits::default()
        }
    }

    fn removed(plan: &PrunePlan) -> Vec<&str> {
        plan.remove.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn dangling_and_unused_by_age() {
        let plan = plan_prune(
            &input(vec![
                image("dangling-old", &[], 10, NOW - 2 * DAY),
                image("dangling-new", &[], 10, NOW - 3600),
                image("unused-old", &["r/a:1"], 10, NOW - 40 * DAY),
                image("unused-recent", &["r/b:1"], 10, NOW - 10 * DAY),
            ]),
            &KeepRules::default(),
            &limits(),
        );
        // Least recently used first.
        assert_eq!(removed(&plan), ["unused-old", "dangling-old"]);
        assert_eq!(plan.bytes_expected, 20);
        let why = |id: &str| {
            plan.keep
                .iter()
                .find(|k| k.id == id)
                .unwrap()
                .protection
                .clone()
        };
        assert_eq!(why("dangling-new"), Protection::TooYoung);
        assert_eq!(why("unused-recent"), Protection::NotSelected);
    }

    #[test]
    fn protections_win_over_every_rule() {
        let mut inp = input(vec![
            image("req", &["r/req:1"], 10, NOW - 99 * DAY),
            image("used", &["r/used:1"], 10, NOW - 99 * DAY),
            image("pulling", &["r/pull:1"], 10, NOW - 99 * DAY),
            image("self", &["r/self:1"], 10, NOW - 99 * DAY),
        ]);
        inp.required.insert("req".into());
        inp.in_use.insert("used".into());
        inp.in_flight.insert("r/pull:1".into());
        inp.own_image = Some("self".into());
        inp.disk = Some(Disk {
            total: 100,
            used: 99,
        });
        let mut l = limits();
        l.high_watermark = Some(50.0);
        l.low_watermark = Some(10.0);
        let plan = plan_prune(&inp, &KeepRules::default(), &l);
        assert!(plan.remove.is_empty(), "{plan:#?}");
    }

    #[test]
    fn each_kept_image_reports_the_protection_that_keeps_it() {
        let mut inp = input(vec![
            image("req", &["r/req:1"], 10, NOW - 99 * DAY),
            image("self", &["r/self:1"], 10, NOW - 99 * DAY),
            image("used", &["r/used:1"], 10, NOW - 99 * DAY),
            image("by-name", &["r/pull:1"], 10, NOW - 99 * DAY),
            image("by-digest", &["other/copy:1"], 10, NOW - 99 * DAY),
            image("unrelated", &["r/pull:2"], 10, NOW - 99 * DAY),
        ]);
        inp.required.insert("req".into());
        inp.in_use.extend(["used".to_owned(), "self".to_owned()]);
        inp.own_image = Some("self".into());
        // Pulling r/pull:1, and some registry's copy of `by-digest`'s content.
        inp.in_flight
            .extend(["r/pull:1".to_owned(), "sha256:by-digest".to_owned()]);
        let plan = plan_prune(&inp, &KeepRules::default(), &limits());
        let why = |id: &str| {
            plan.keep
                .iter()
                .find(|k| k.id == id)
                .map(|k| k.protection.clone())
        };
        assert_eq!(why("req"), Some(Protection::Required));
        assert_eq!(why("self"), Some(Protection::OwnImage));
        assert_eq!(why("used"), Some(Protection::InUse));
        assert_eq!(why("by-name"), Some(Protection::InFlight));
        assert_eq!(why("by-digest"), Some(Protection::InFlight));
        // Another tag of a repository being pulled is not part of the pull.
        assert_eq!(removed(&plan), ["unrelated"]);
    }

    #[test]
    fn a_pull_covers_its_names_and_its_content_only() {
        let pulling: HashSet<String> = ["reg/a:1".to_owned(), "sha256:abc".to_owned()].into();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(being_pulled("x", names(&["reg/a:1"]).iter(), &pulling));
        assert!(being_pulled(
            "x",
            names(&["mirror/a@sha256:abc"]).iter(),
            &pulling
        ));
        assert!(!being_pulled(
            "x",
            names(&["reg/a:2", "reg/a@sha256:abd"]).iter(),
            &pulling
        ));
        assert!(!being_pulled(
            "x",
            names(&["reg/a:1"]).iter(),
            &HashSet::new()
        ));
        // The image a re-tag will name, whatever its names.
        let retag: HashSet<String> = ["sha256:holder".to_owned()].into();
        assert!(being_pulled("sha256:holder", names(&[]).iter(), &retag));
    }

    #[test]
    fn a_lost_state_file_causes_no_mass_deletion() {
        let mut inp = input(vec![image("old", &["r/a:1"], 10, NOW - 400 * DAY)]);
        // The state was lost an hour ago: stowage has watched for an hour only.
        inp.usage = Usage {
            watching_since: NOW - 3600,
            ..Usage::default()
        };
        inp.usage.first_seen.insert("old".into(), NOW - 3600);
        let mut l = limits();
        l.min_age = 60;
        let plan = plan_prune(&inp, &KeepRules::default(), &l);
        assert!(plan.remove.is_empty(), "{plan:#?}");
    }

    #[test]
    fn keep_rules() {
        let mut labelled = image("labelled", &["r/l:1"], 10, NOW - 99 * DAY);
        labelled.labels.insert("tier".into(), "infra".into());
        let local = StoreImage {
            digests: vec![],
            ..image("local", &["r/local:1"], 10, NOW - 99 * DAY)
        };
        let inp = input(vec![
            image("globbed", &["r/infra/x:1"], 10, NOW - 99 * DAY),
            image("pinned", &["r/p:1"], 10, NOW - 99 * DAY),
            labelled,
            local,
            image("gone", &["r/gone:1"], 10, NOW - 99 * DAY),
        ]);
        let keep = KeepRules {
            names: vec![compile_keep("r/infra/*").unwrap()],
            digests: ["sha256:pinned".to_owned()].into(),
            labels: vec![("tier".into(), Some("infra".into()))],
            ..KeepRules::default()
        };
        let plan = plan_prune(&inp, &keep, &limits());
        assert_eq!(removed(&plan), ["gone"]);
        let why = |id: &str| {
            plan.keep
                .iter()
                .find(|k| k.id == id)
                .unwrap()
                .protection
                .clone()
        };
        assert_eq!(why("globbed"), Protection::KeepRule("r/infra/*".into()));
        assert_eq!(why("pinned"), Protection::KeepRule("sha256:pinned".into()));
        assert_eq!(
            why("labelled"),
            Protection::KeepRule("label tier=infra".into())
        );
        assert_eq!(why("local"), Protection::LocalOnly);
    }

    #[test]
    fn digests_no_registry_serves_do_not_make_an_image_pullable() {
        // The containerd store and Podman list a repository digest for a local build too.
        let mut inp = input(vec![
            image("built", &["r/built:1"], 10, NOW - 99 * DAY),
            image("pulled", &["r/pulled:1"], 10, NOW - 99 * DAY),
            image("dangling", &[], 10, NOW - 99 * DAY),
        ]);
        inp.no_registry_copy = ["built".to_owned(), "dangling".to_owned()].into();
        let plan = plan_prune(&inp, &KeepRules::default(), &limits());
        let mut gone = removed(&plan);
        gone.sort_unstable();
        assert_eq!(gone, ["dangling", "pulled"]);
        let kept = plan.keep.iter().find(|k| k.id == "built").unwrap();
        assert_eq!(kept.protection, Protection::LocalOnly);
        // Unless local-only images may go.
        let keep = KeepRules {
            prune_local_only: true,
            ..KeepRules::default()
        };
        let all = plan_prune(&inp, &keep, &limits());
        let mut gone = removed(&all);
        gone.sort_unstable();
        assert_eq!(gone, ["built", "dangling", "pulled"]);
    }

    #[test]
    fn keep_the_newest_per_repository() {
        let inp = input(vec![
            image("v1", &["r/app:1"], 10, NOW - 90 * DAY),
            image("v2", &["r/app:2"], 10, NOW - 80 * DAY),
            image("v3", &["r/app:3"], 10, NOW - 70 * DAY),
        ]);
        let keep = KeepRules {
            newest_per_repository: 2,
            ..KeepRules::default()
        };
        assert_eq!(removed(&plan_prune(&inp, &keep, &limits())), ["v1"]);
    }

    #[test]
    fn children_go_before_parents_and_parents_of_kept_images_stay() {
        let mut child = image("child", &[], 10, NOW - 50 * DAY);
        child.parent = Some("parent".into());
        let mut grandchild = image("grandchild", &[], 10, NOW - 60 * DAY);
        grandchild.parent = Some("child".into());
        let parent = image("parent", &[], 10, NOW - 40 * DAY);
        let plan = plan_prune(
            &input(vec![parent.clone(), child.clone(), grandchild.clone()]),
            &KeepRules::default(),
            &limits(),
        );
        assert_eq!(removed(&plan), ["grandchild", "child", "parent"]);
        let mut inp = input(vec![parent, child, grandchild]);
        inp.in_use.insert("grandchild".into());
        let plan = plan_prune(&inp, &KeepRules::default(), &limits());
        assert!(plan.remove.is_empty());
        let why = |id: &str| {
            plan.keep
                .iter()
                .find(|k| k.id == id)
                .unwrap()
                .protection
                .clone()
        };
        assert_eq!(why("parent"), Protection::ParentOfKept);
    }

    /// Regression (found by the property test): a grandparent stayed selected after its child
    /// was dropped for a child of its own that stays.
    #[test]
    fn a_staying_grandchild_keeps_the_whole_chain() {
        let gp = image("gp", &[], 10, NOW - 90 * DAY);
        let mut p = image("p", &[], 10, NOW - 80 * DAY);
        p.parent = Some("gp".into());
        // Tagged and recently made: not selected, not protected.
        let mut c = image("c", &["r/c:1"], 10, NOW - 2 * DAY);
        c.parent = Some("p".into());
        let plan = plan_prune(&input(vec![gp, p, c]), &KeepRules::default(), &limits());
        assert!(plan.remove.is_empty(), "{plan:#?}");
        assert_eq!(plan.deferred, 2);
        assert_eq!(plan.keep.len(), 3);
    }

    #[test]
    fn watermarks_remove_least_recently_used_down_to_the_low_mark() {
        let mut inp = input(vec![
            image("a", &["r/a:1"], 30, NOW - 5 * DAY),
            image("b", &["r/b:1"], 30, NOW - 6 * DAY),
            image("c", &["r/c:1"], 30, NOW - 7 * DAY),
        ]);
        inp.usage.last_used.insert("c".into(), NOW - 2 * DAY);
        inp.disk = Some(Disk {
            total: 1000,
            used: 900,
        });
        let l = Limits {
            high_watermark: Some(85.0),
            low_watermark: Some(84.0),
            unused_max_age: None,
            ..limits()
        };
        // 90% used; the low mark is 84%: 60 bytes must go, b (oldest use) then a.
        let plan = plan_prune(&inp, &KeepRules::default(), &l);
        assert_eq!(removed(&plan), ["b", "a"]);
        assert!(plan.remove.iter().all(|c| c.rule == Rule::DiskWatermark));
        // Under the high mark, nothing moves.
        inp.disk = Some(Disk {
            total: 1000,
            used: 800,
        });
        assert!(
            plan_prune(&inp, &KeepRules::default(), &l)
                .remove
                .is_empty()
        );
    }

    #[test]
    fn removals_per_cycle_are_capped() {
        let images = (0..10)
            .map(|i| image(&format!("d{i}"), &[], 1, NOW - 9 * DAY))
            .collect();
        let l = Limits {
            max_removals: 3,
            ..limits()
        };
        let plan = plan_prune(&input(images), &KeepRules::default(), &l);
        assert_eq!((plan.remove.len(), plan.deferred), (3, 7));
    }

    #[test]
    fn globs_and_regexes() {
        let g = compile_keep("docker.io/library/*").unwrap();
        assert!(g.regex.is_match("docker.io/library/nginx:latest"));
        assert!(!g.regex.is_match("docker.io/library/a/b:1"));
        let gg = compile_keep("registry.example.com/**").unwrap();
        assert!(gg.regex.is_match("registry.example.com/a/b/c:1"));
        let r = compile_keep("regex:.*:stable").unwrap();
        assert!(r.regex.is_match("r/x:stable") && !r.regex.is_match("r/x:stable2"));
        assert!(compile_keep("regex:(").is_err());
    }

    fn arb_store() -> impl Strategy<Value = (PruneInput, Limits)> {
        let image = (
            0u8..30,
            prop::option::of(0u8..30),
            prop::bool::ANY,
            1u64..1000,
            0i64..200,
            prop::option::of(0i64..200),
            prop::bool::ANY,
        );
        (
            prop::collection::vec(image, 1..40),
            prop::collection::hash_set(0u8..30, 0..10),
            prop::collection::hash_set(0u8..30, 0..10),
            0u64..50_000,
            prop::option::of((50.0f64..99.0, 1.0f64..49.0)),
            1usize..50,
            0i64..120,
        )
            .prop_map(
                |(imgs, in_use, required, used, marks, max_removals, watched_days)| {
                    let mut seen = HashSet::new();
                    let images: Vec<StoreImage> = imgs
                        .into_iter()
                        .filter(|(id, ..)| seen.insert(*id))
                        .map(
                            |(id, parent, tagged, size, age, _used_ago, local)| StoreImage {
                                id: format!("i{id}"),
                                // Parents point to lower ids only: no cycles.
                                parent: parent.filter(|p| *p < id).map(|p| format!("i{p}")),
                                tags: if tagged {
                                    vec![format!("r/repo{}:t{id}", id % 4)]
                                } else {
                                    vec![]
                                },
                                digests: if tagged && !local {
                                    vec![format!("r/repo{}@sha256:{id}", id % 4)]
                                } else {
                                    vec![]
                                },
                                labels: BTreeMap::new(),
                                size,
                                created: NOW - age * DAY,
                            },
                        )
                        .collect();
                    let mut usage = Usage {
                        watching_since: NOW - watched_days * DAY,
                        ..Usage::default()
                    };
                    for i in &images {
                        usage
                            .first_seen
                            .insert(i.id.clone(), i.created.max(usage.watching_since));
                    }
                    let _ = used;
                    let inp = PruneInput {
                        in_use: in_use.iter().map(|i| format!("i{i}")).collect(),
                        required: required.iter().map(|i| format!("i{i}")).collect(),
                        disk: Some(Disk {
                            total: 100_000,
                            used: used.min(100_000)
                                + images.iter().map(|i| i.size).sum::<u64>().min(50_000),
                        }),
                        images,
                        usage,
                        now: NOW,
                        ..PruneInput::default()
                    };
                    let limits = Limits {
                        min_age: DAY,
                        dangling_min_age: Some(2 * DAY),
                        unused_max_age: Some(30 * DAY),
                        high_watermark: marks.map(|(h, _)| h),
                        low_watermark: marks.map(|(_, l)| l),
                        max_store_size: None,
                        max_removals,
                    };
                    (inp, limits)
                },
            )
    }

    proptest! {
        /// Never a protected image; never a parent before its child, nor a parent whose child
        /// stays; never more than the cap; every image is either removed or kept.
        #[test]
        fn never_removes_what_is_protected((inp, limits) in arb_store()) {
            let plan = plan_prune(&inp, &KeepRules::default(), &limits);
            let removing: HashSet<&str> = plan.remove.iter().map(|c| c.id.as_str()).collect();
            prop_assert!(plan.remove.len() <= limits.max_removals);
            for c in &plan.remove {
                prop_assert!(!inp.in_use.contains(&c.id), "in use: {}", c.id);
                prop_assert!(!inp.required.contains(&c.id), "required: {}", c.id);
                let image = inp.images.iter().find(|i| i.id == c.id).unwrap();
                let first_seen = inp.usage.first_seen[&c.id];
                prop_assert!(inp.now - first_seen >= limits.min_age, "too young: {}", c.id);
                prop_assert!(image.tags.is_empty() || !image.digests.is_empty(), "local only: {}", c.id);
                // Every child of a removed image is removed too, and earlier.
                for child in inp.images.iter().filter(|i| i.parent.as_deref() == Some(c.id.as_str())) {
                    prop_assert!(removing.contains(child.id.as_str()), "parent {} of staying {}", c.id, child.id);
                    let pos = |id: &str| plan.remove.iter().position(|x| x.id == id).unwrap();
                    prop_assert!(pos(&child.id) < pos(&c.id));
                }
                if c.rule == Rule::UnusedMaxAge {
                    prop_assert!(inp.now - inp.usage.watching_since >= 30 * DAY);
                }
            }
            prop_assert_eq!(plan.remove.len() + plan.keep.len(), inp.images.len());
        }

        /// The watermark rule stops as soon as the disk would be under the low mark.
        #[test]
        fn stops_at_the_low_watermark((inp, mut limits) in arb_store()) {
            limits.unused_max_age = None;
            limits.dangling_min_age = None;
            limits.max_removals = usize::MAX;
            let plan = plan_prune(&inp, &KeepRules::default(), &limits);
            if let (Some(disk), Some(low)) = (inp.disk, limits.low_watermark) {
                let pct = |used: u64| used as f64 * 100.0 / disk.total as f64;
                let freed: u64 = plan.remove.iter().map(|c| c.size).sum();
                if let Some(largest) = plan.remove.iter().map(|c| c.size).max() {
                    // Selection stopped as soon as it was enough: without the last image it
                    // chose (at most the largest) the disk was still above the low mark.
                    prop_assert!(pct(disk.used.saturating_sub(freed) + largest) > low);
                }
            } else {
                prop_assert!(plan.remove.is_empty());
            }
        }
    }
}

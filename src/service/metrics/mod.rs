//! Prometheus metrics: what the daemon did (pulls, retries, prune cycles, bytes freed, what
//! was kept and why) and what it found (required images present or missing, the store, the
//! disk). Served over HTTP by [`serve`] at `/metrics` when the config has a `[metrics]` table.
//!
//! The daemon records into [`Metrics`] as it goes; nothing here asks the engine, so a scrape
//! is cheap and never waits on dockerd.

mod families;
mod serve;

use std::sync::Arc;

use prometheus::{Registry, TextEncoder};

use families::{PresenceFamilies, PruneFamilies, PullFamilies, gauges};

use crate::decide::outcome::{Outcome, PullResult};
use crate::decide::shortfall::Missing;
use crate::model::sync::Locked;
use crate::service::pruner::{Cycle, RemovalResult};

pub(crate) use serve::{bind, serve};

/// Every metric the daemon exports, registered in one registry.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pulls: PullFamilies,
    presence: PresenceFamilies,
    prunes: PruneFamilies,
    /// The image names `present` has series for.
    present_names: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics, all at zero, named `stowage_*`.
    pub(crate) fn new() -> Metrics {
        let r = Registry::new_custom(Some("stowage".to_owned()), None).expect("a valid prefix");
        let build = gauges(&r, "build_info", "The running stowage's version", "version");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            pulls: PullFamilies::new(&r),
            presence: PresenceFamilies::new(&r),
            prunes: PruneFamilies::new(&r),
            present_names: Arc::default(),
            registry: r,
        }
    }

    /// The exposition text (Prometheus text format 0.0.4), as served.
    pub(crate) fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text format encodes any gathered metric")
    }

    /// A finished pull run.
    pub(crate) fn pass(&self, trigger: &str, outcomes: &[Outcome]) {
        self.pulls.runs.with_label_values(&[trigger]).inc();
        self.pulls
            .last_run
            .with_label_values(&[trigger])
            .set(chrono::Utc::now().timestamp());
        for o in outcomes {
            let result = match &o.result {
                PullResult::Kept => "kept",
                PullResult::Pulled { updated: true, .. } => "pulled",
                PullResult::Pulled { updated: false, .. } => "up_to_date",
                PullResult::Tagged { .. } => "tagged",
                PullResult::Failed { class, .. } => {
                    self.pulls
                        .failures
                        .with_label_values(&[class.as_str()])
                        .inc();
                    "failed"
                }
                PullResult::Skipped => "skipped",
            };
            self.pulls.images.with_label_values(&[result]).inc();
            self.pulls.attempts.inc_by(u64::from(o.attempts));
            if matches!(o.result, PullResult::Pulled { updated: true, .. }) {
                self.pulls
                    .pull_seconds
                    .observe(o.elapsed_ms as f64 / 1000.0);
            }
        }
    }

    /// Which required images are present after a run.
    pub(crate) fn presence<'a>(
        &self,
        required: impl Iterator<Item = &'a str>,
        missing: &[Missing],
    ) {
        // Only the current config's images: those a reload dropped go away. The others are
        // set in place, so a scrape never sees them missing from the family for a moment.
        let required: Vec<&str> = required.collect();
        {
            let mut shown = self.present_names.locked();
            for gone in shown.iter().filter(|n| !required.contains(&n.as_str())) {
                let _ = self.presence.present.remove_label_values(&[gone.as_str()]);
            }
            *shown = required.iter().map(|n| (*n).to_owned()).collect();
        }
        let mut total = 0;
        for name in required {
            total += 1;
            let absent = missing.iter().any(|m| m.name == name);
            self.presence
                .present
                .with_label_values(&[name])
                .set(i64::from(!absent));
        }
        self.presence.required.set(total);
        self.presence
            .missing
            .set(i64::try_from(missing.len()).unwrap_or(i64::MAX));
    }

    /// The daemon reported ready.
    pub(crate) fn ready(&self) {
        self.presence.ready.set(1);
    }

    /// A finished prune cycle.
    pub(crate) fn prune(&self, trigger: &str, cycle: &Cycle) {
        let (plan, removals) = (&cycle.plan, &cycle.removals);
        if let Some(bytes) = cycle.build_cache_freed {
            self.prunes.build_cache_freed.inc_by(bytes);
        }
        self.prunes.prune_cycles.with_label_values(&[trigger]).inc();
        let mut freed = 0;
        for r in removals {
            let rule = r.candidate.rule.name();
            match r.result {
                RemovalResult::Removed => {
                    self.prunes
                        .removed
                        .with_label_values(&[rule.as_str()])
                        .inc();
                    self.prunes
                        .removed_bytes
                        .with_label_values(&[rule.as_str()])
                        .inc_by(r.candidate.size);
                    freed += r.candidate.size;
                }
                RemovalResult::Failed => self.prunes.removal_failures.inc(),
                RemovalResult::Skipped => {}
            }
            match &r.race {
                Some(crate::service::pruner::Race::Healed) => {
                    self.prunes.races.with_label_values(&["healed"]).inc();
                }
                Some(crate::service::pruner::Race::Lost { .. }) => {
                    self.prunes.races.with_label_values(&["lost"]).inc();
                }
                None => {}
            }
        }
        // Only the last cycle's picture: protections that no longer keep anything go away.
        self.prunes.kept.reset();
        for k in &plan.keep {
            self.prunes
                .kept
                .with_label_values(&[k.protection.name().as_str()])
                .inc();
        }
        self.prunes
            .deferred
            .set(i64::try_from(plan.deferred).unwrap_or(i64::MAX));
        let images = plan.keep.len() + plan.remove.len();
        let bytes: u64 = plan
            .keep
            .iter()
            .map(|k| k.size)
            .chain(plan.remove.iter().map(|c| c.size))
            .sum();
        let removed = removals
            .iter()
            .filter(|r| r.result == RemovalResult::Removed)
            .count();
        self.prunes
            .store_images
            .set(i64::try_from(images - removed).unwrap_or(i64::MAX));
        self.prunes
            .store_bytes
            .set(i64::try_from(bytes.saturating_sub(freed)).unwrap_or(i64::MAX));
    }

    /// A config reload, applied or refused.
    pub(crate) fn reload(&self, ok: bool) {
        self.presence
            .reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Disk use of the data root's filesystem, as last measured.
    pub(crate) fn disk(&self, used: u64, total: u64) {
        if total > 0 {
            self.prunes.disk_used.set(used as f64 / total as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::prune_plan::{Candidate, Kept, Protection, PrunePlan, Rule};
    use crate::service::pruner::Removal;

    fn line<'a>(text: &'a str, metric: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(' '))
            .map(|l| &l[metric.len() + 1..])
    }

    #[test]
    fn presence_and_prune_cycles_are_exported_as_recorded() {
        let m = Metrics::new();
        let missing = [Missing {
            name: "r/b:1".into(),
            class: None,
        }];
        m.presence(["r/a:1", "r/b:1"].into_iter(), &missing);
        let candidate = |id: &str, size, rule| Candidate {
            id: id.into(),
            names: vec![],
            references: vec![],
            size,
            last_used: 0,
            rule,
        };
        let plan = PrunePlan {
            remove: vec![
                candidate("x", 100, Rule::Dangling),
                candidate("y", 50, Rule::UnusedMaxAge),
            ],
            keep: vec![Kept {
                id: "k".into(),
                names: vec![],
                size: 7,
                protection: Protection::InUse,
            }],
            bytes_expected: 150,
            deferred: 3,
        };
        let removals = [
            Removal {
                candidate: plan.remove[0].clone(),
                result: RemovalResult::Removed,
                error: None,
                race: Some(crate::service::pruner::Race::Healed),
            },
            Removal {
                candidate: plan.remove[1].clone(),
                result: RemovalResult::Failed,
                error: Some("conflict".into()),
                race: None,
            },
        ];
        m.prune(
            "schedule",
            &Cycle {
                plan,
                removals: removals.to_vec(),
                build_cache_freed: Some(4096),
            },
        );
        let text = m.encode();
        assert_eq!(line(&text, "stowage_required_images"), Some("2"));
        assert_eq!(line(&text, "stowage_missing_images"), Some("1"));
        assert_eq!(
            line(&text, "stowage_image_present{image=\"r/a:1\"}"),
            Some("1")
        );
        assert_eq!(
            line(&text, "stowage_image_present{image=\"r/b:1\"}"),
            Some("0")
        );
        assert_eq!(
            line(
                &text,
                "stowage_prune_removed_images_total{rule=\"dangling\"}"
            ),
            Some("1")
        );
        assert_eq!(
            line(
                &text,
                "stowage_prune_removed_bytes_total{rule=\"dangling\"}"
            ),
            Some("100")
        );
        assert_eq!(
            line(&text, "stowage_prune_removal_failures_total"),
            Some("1")
        );
        assert_eq!(
            line(&text, "stowage_prune_races_total{outcome=\"healed\"}"),
            Some("1")
        );
        assert_eq!(
            line(&text, "stowage_prune_kept_images{protection=\"in-use\"}"),
            Some("1")
        );
        assert_eq!(line(&text, "stowage_prune_deferred_images"), Some("3"));
        assert_eq!(
            line(&text, "stowage_build_cache_freed_bytes_total"),
            Some("4096")
        );
        // The store after the cycle: three images of 157 bytes, less the one removed.
        assert_eq!(line(&text, "stowage_store_images"), Some("2"));
        assert_eq!(line(&text, "stowage_store_bytes"), Some("57"));

        // The kept picture is the last cycle's only.
        m.prune(
            "schedule",
            &Cycle {
                plan: PrunePlan::default(),
                removals: Vec::new(),
                build_cache_freed: None,
            },
        );
        let text = m.encode();
        assert_eq!(
            line(&text, "stowage_prune_kept_images{protection=\"in-use\"}"),
            None
        );
        assert_eq!(
            line(&text, "stowage_prune_cycles_total{trigger=\"schedule\"}"),
            Some("2")
        );
    }
}

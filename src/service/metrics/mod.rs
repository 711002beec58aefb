//! Prometheus metrics: what the daemon did (pulls, retries, prune cycles, bytes freed, what
//! was kept and why) and what it found (required images present or missing, the store, the
//! disk). Served over HTTP by [`serve`] at `/metrics` when the config has a `[metrics]` table.
//!
//! The daemon records into [`Metrics`] as it goes; nothing here asks the engine, so a scrape
//! is cheap and never waits on dockerd.

mod families;
mod serve;

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::{IntGaugeVec, Registry, TextEncoder};

use families::{
    DaemonFamilies, ImageFamilies, PresenceFamilies, PruneFamilies, PullFamilies, RegistryFamilies,
    register,
};

use crate::decide::outcome::{Outcome, PullResult};
use crate::decide::shortfall::Missing;
use crate::model::failure::FailureClass;
use crate::model::rate_limit::Budget;
use crate::model::signature::Check;
use crate::model::sync::Locked;
use crate::service::health::Health;
use crate::service::pruner::{Cycle, RemovalResult};
use crate::service::readiness::Notifier;

pub(crate) use serve::{Endpoint, Moved, bind, serve};

/// What the daemon's HTTP listener answers from: the metrics (`/metrics`), what systemd is
/// told about readiness (`/readyz`), and whether the loops still move (`/healthz`). Cheap to
/// clone; clones share everything.
#[derive(Debug, Clone)]
pub(crate) struct Probes {
    pub(crate) metrics: Metrics,
    pub(crate) notifier: Notifier,
    pub(crate) health: Health,
}

impl Probes {
    /// `metrics` and `notifier`, with no loop yet.
    pub(crate) fn new(metrics: Metrics, notifier: Notifier) -> Probes {
        Probes {
            metrics,
            notifier,
            health: Health::new(),
        }
    }
}

/// Every metric the daemon exports, registered in one registry.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pulls: PullFamilies,
    presence: PresenceFamilies,
    prunes: PruneFamilies,
    daemon: DaemonFamilies,
    images: ImageFamilies,
    registries: RegistryFamilies,
    /// The image names `present` has series for.
    present_names: Arc<std::sync::Mutex<Vec<String>>>,
    /// The label values each image's `image_info` series has now.
    info_labels: Arc<std::sync::Mutex<BTreeMap<String, [String; 2]>>>,
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
        let build = register(
            &r,
            IntGaugeVec::new(
                prometheus::Opts::new(
                    "build_info",
                    "The running stowage's version and the commit it was built from",
                ),
                &["version", "commit"],
            )
            .expect("a valid metric"),
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("STOWAGE_COMMIT")])
            .set(1);
        let metrics = Metrics {
            pulls: PullFamilies::new(&r),
            presence: PresenceFamilies::new(&r),
            prunes: PruneFamilies::new(&r),
            daemon: DaemonFamilies::new(&r),
            images: ImageFamilies::new(&r),
            registries: RegistryFamilies::new(&r),
            present_names: Arc::default(),
            info_labels: Arc::default(),
            registry: r,
        };
        // Counters that alerts take the rate or increase of start at zero, so their first
        // event shows as an increase.
        for class in FailureClass::ALL {
            metrics.pulls.failures.with_label_values(&[class.as_str()]);
        }
        for result in ["ok", "failed"] {
            metrics.presence.reloads.with_label_values(&[result]);
        }
        for (result, found) in Check::LABELS {
            metrics
                .images
                .signature_checks
                .with_label_values(&[result, found]);
        }
        metrics.presence.last_reload_ok.set(1);
        metrics
    }

    /// The exposition text (Prometheus text format 0.0.4), as served.
    pub(crate) fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text format encodes any gathered metric")
    }

    /// Whether the engine answered the last call.
    pub(crate) fn engine_up(&self, up: bool) {
        self.daemon.engine_up.set(i64::from(up));
    }

    /// The config prunes: its prune series are exported, with the high watermark if any.
    pub(crate) fn prunes_configured(&self, high_watermark: Option<f64>) {
        // Registering twice (a reload) is refused, and changes nothing.
        let _ = self
            .registry
            .register(Box::new(self.daemon.prune_last_success.clone()));
        // At 0 from the start, so the first one is an increase an alert sees.
        for outcome in ["healed", "lost"] {
            self.prunes.against_plan.with_label_values(&[outcome]);
        }
        match high_watermark {
            Some(high) => {
                self.daemon.high_watermark.set(high / 100.0);
                let _ = self
                    .registry
                    .register(Box::new(self.daemon.high_watermark.clone()));
            }
            None => {
                let _ = self
                    .registry
                    .unregister(Box::new(self.daemon.high_watermark.clone()));
            }
        }
    }

    /// Each image a run covered: its pin and digest, and whether its name drifted.
    fn images(&self, outcomes: &[Outcome]) {
        let mut labels = self.info_labels.locked();
        for o in outcomes {
            let d = &o.decision;
            let image = d.reference().to_string();
            let now = [
                d.pinned.mode.as_str().to_owned(),
                d.digest.clone().unwrap_or_default(),
            ];
            if let Some(old) = labels.get(&image)
                && *old != now
            {
                let _ = self
                    .images
                    .info
                    .remove_label_values(&[image.as_str(), &old[0], &old[1]]);
            }
            self.images
                .info
                .with_label_values(&[image.as_str(), &now[0], &now[1]])
                .set(1);
            labels.insert(image.clone(), now);
            let repaired = d.drift && o.is_ok();
            if repaired {
                self.images.drift_repairs.with_label_values(&[&image]).inc();
            }
            self.images
                .drifted
                .with_label_values(&[&image])
                .set(i64::from(d.drift && !repaired));
            self.signature(&image, d.signature.as_ref());
        }
    }

    /// What the signature check of an image came to this run, if it was checked.
    fn signature(&self, image: &str, check: Option<&Check>) {
        let Some(check) = check else {
            return;
        };
        let verified = matches!(check, Check::Verified { .. });
        self.images
            .signature_verified
            .with_label_values(&[image])
            .set(i64::from(verified));
        if !matches!(check, Check::Verified { cached: true, .. }) {
            self.images
                .signature_checks
                .with_label_values(&[check.as_str(), check.found()])
                .inc();
        }
    }

    /// Whether `image`'s tag has moved away from its pin, as just checked.
    pub(crate) fn update_available(&self, image: &str, moved: bool) {
        self.images
            .update_available
            .with_label_values(&[image])
            .set(i64::from(moved));
    }

    /// What registries said of their budgets.
    pub(crate) fn budgets(&self, budgets: &BTreeMap<String, Budget>) {
        for (registry, b) in budgets {
            let set = |g: &IntGaugeVec, v: u64| {
                g.with_label_values(&[registry.as_str()])
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&self.registries.limit, b.limit);
            set(&self.registries.remaining, b.remaining);
        }
    }

    /// A finished pull run.
    pub(crate) fn pass(&self, trigger: &str, outcomes: &[Outcome]) {
        self.engine_up(true);
        self.images(outcomes);
        if outcomes.iter().all(Outcome::is_ok) {
            self.daemon
                .pull_last_success
                .set(chrono::Utc::now().timestamp());
        }
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
                PullResult::Deferred { .. } => "deferred",
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
            let mut labels = self.info_labels.locked();
            let mut gone: Vec<String> = shown.iter().chain(labels.keys()).cloned().collect();
            gone.retain(|n| !required.contains(&n.as_str()));
            for gone in &gone {
                let _ = self.presence.present.remove_label_values(&[gone.as_str()]);
                let _ = self.images.drifted.remove_label_values(&[gone.as_str()]);
                let _ = self
                    .images
                    .update_available
                    .remove_label_values(&[gone.as_str()]);
                if let Some([pin, digest]) = labels.remove(gone) {
                    let _ = self
                        .images
                        .info
                        .remove_label_values(&[gone.as_str(), &pin, &digest]);
                }
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
        self.engine_up(true);
        self.daemon
            .prune_last_success
            .set(chrono::Utc::now().timestamp());
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
            for taken in &r.against_plan {
                let outcome = match taken.outcome {
                    crate::service::pruner::Race::Healed => "healed",
                    crate::service::pruner::Race::Lost { .. } => "lost",
                };
                self.prunes.against_plan.with_label_values(&[outcome]).inc();
            }
        }
        for r in &cycle.late_races {
            let outcome = match r.outcome {
                crate::service::pruner::Race::Healed => "healed",
                crate::service::pruner::Race::Lost { .. } => "lost",
            };
            self.prunes.races.with_label_values(&[outcome]).inc();
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
        self.prunes
            .images_lost
            .set(i64::try_from(cycle.images_lost()).unwrap_or(i64::MAX));
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
            .measured()
            .set(i64::try_from(images - removed).unwrap_or(i64::MAX));
        self.prunes
            .store_bytes
            .measured()
            .set(i64::try_from(bytes.saturating_sub(freed)).unwrap_or(i64::MAX));
    }

    /// A config reload, applied or refused.
    pub(crate) fn reload(&self, ok: bool) {
        self.presence
            .reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.presence.last_reload_ok.set(i64::from(ok));
    }

    /// Disk use of the data root's filesystem, as last measured.
    pub(crate) fn disk(&self, used: u64, total: u64) {
        if total > 0 {
            self.prunes
                .disk_used
                .measured()
                .set(used as f64 / total as f64);
        }
    }
}

#[cfg(test)]
mod tests;

//! The metric families, grouped by what they tell, each registered once in the daemon's
//! registry.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, exponential_buckets,
};

/// Registers `metric` in `registry` and hands it back. Names are fixed and unique, so a
/// failure is a bug in this file.
pub(super) fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

/// A gauge exported from its first measurement on. Before it, a `0` would read as one: an empty
/// store, an empty disk, on a host whose config does not prune and so never measures them.
#[derive(Debug, Clone)]
pub(super) struct Measured<G> {
    gauge: G,
    registry: Registry,
    exported: std::sync::Arc<std::sync::Once>,
}

impl<G: prometheus::core::Collector + Clone + 'static> Measured<G> {
    fn new(registry: &Registry, gauge: G) -> Self {
        Measured {
            gauge,
            registry: registry.clone(),
            exported: std::sync::Arc::new(std::sync::Once::new()),
        }
    }

    /// The gauge, to set: exported from now on.
    pub(super) fn measured(&self) -> &G {
        self.exported.call_once(|| {
            register(&self.registry, self.gauge.clone());
        });
        &self.gauge
    }
}

fn counters(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric"),
    )
}

fn gauges(registry: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), &[label]).expect("a valid metric"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("a valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("a valid metric"))
}

/// The pull runs: how many, what became of each image, how long pulls took.
#[derive(Debug, Clone)]
pub(super) struct PullFamilies {
    pub(super) runs: IntCounterVec,
    pub(super) last_run: IntGaugeVec,
    pub(super) images: IntCounterVec,
    pub(super) failures: IntCounterVec,
    pub(super) attempts: IntCounter,
    pub(super) pull_seconds: Histogram,
}

impl PullFamilies {
    pub(super) fn new(r: &Registry) -> Self {
        PullFamilies {
            runs: counters(
                r,
                "pull_runs_total",
                "Pull runs (passes over required images), by trigger: boot, schedule, retry",
                "trigger",
            ),
            last_run: gauges(
                r,
                "pull_last_run_timestamp_seconds",
                "When the last pull run of each trigger finished (Unix time)",
                "trigger",
            ),
            images: counters(
                r,
                "pull_images_total",
                "Images handled by pull runs, by result: pulled, up_to_date, tagged, kept, \
                 failed, skipped",
                "result",
            ),
            failures: counters(
                r,
                "pull_failures_total",
                "Images a run could not get, by failure class: auth, not-found, network, engine",
                "class",
            ),
            attempts: counter(
                r,
                "registry_attempts_total",
                "Registry attempts made for images (resolutions and pulls, retries included)",
            ),
            pull_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "pull_duration_seconds",
                        "Time to get one image that had to be pulled, retries included",
                    )
                    // 50 ms to about 27 minutes.
                    .buckets(exponential_buckets(0.05, 2.0, 16).expect("valid buckets")),
                )
                .expect("a valid metric"),
            ),
        }
    }
}

/// What the daemon is there for: required images present or missing, readiness, reloads.
#[derive(Debug, Clone)]
pub(super) struct PresenceFamilies {
    pub(super) required: IntGauge,
    pub(super) missing: IntGauge,
    pub(super) present: IntGaugeVec,
    pub(super) ready: IntGauge,
    pub(super) reloads: IntCounterVec,
    pub(super) last_reload_ok: IntGauge,
}

impl PresenceFamilies {
    pub(super) fn new(r: &Registry) -> Self {
        PresenceFamilies {
            required: gauge(r, "required_images", "Images the config requires"),
            missing: gauge(
                r,
                "missing_images",
                "Required images that are not present (retried with backoff)",
            ),
            present: gauges(
                r,
                "image_present",
                "Whether each required image is present (1) or missing (0)",
                "image",
            ),
            ready: gauge(
                r,
                "ready",
                "Whether the daemon reported ready: every required image present, or \
                 pull.ready_timeout passed",
            ),
            reloads: counters(
                r,
                "config_reloads_total",
                "Config reloads (SIGHUP), by result: ok, failed (the running config stays)",
                "result",
            ),
            last_reload_ok: gauge(
                r,
                "config_last_reload_successful",
                "Whether the last config reload was applied (1; also before any) or refused (0: \
                 the file on disk is not the config in force)",
            ),
        }
    }
}

/// Prune cycles: what went, what stayed and why, the store and the disk.
#[derive(Debug, Clone)]
pub(super) struct PruneFamilies {
    pub(super) prune_cycles: IntCounterVec,
    pub(super) removed: IntCounterVec,
    pub(super) removed_bytes: IntCounterVec,
    pub(super) removal_failures: IntCounter,
    pub(super) races: IntCounterVec,
    pub(super) against_plan: IntCounterVec,
    pub(super) kept: IntGaugeVec,
    /// Images containers use that a prune took and could not put back yet.
    pub(super) images_lost: IntGauge,
    pub(super) deferred: IntGauge,
    pub(super) store_images: Measured<IntGauge>,
    pub(super) store_bytes: Measured<IntGauge>,
    pub(super) disk_used: Measured<Gauge>,
    pub(super) build_cache_freed: IntCounter,
}

impl PruneFamilies {
    pub(super) fn new(r: &Registry) -> Self {
        PruneFamilies {
            prune_cycles: counters(
                r,
                "prune_cycles_total",
                "Prune cycles, by trigger: schedule, watermark",
                "trigger",
            ),
            removed: counters(
                r,
                "prune_removed_images_total",
                "Images removed by pruning, by the rule that selected them",
                "rule",
            ),
            removed_bytes: counters(
                r,
                "prune_removed_bytes_total",
                "Bytes freed by pruning (image sizes), by rule",
                "rule",
            ),
            removal_failures: counter(
                r,
                "prune_removal_failures_total",
                "Removals the engine refused or that failed (the image stays; never forced)",
            ),
            races: counters(
                r,
                "prune_races_total",
                "Removals that raced a container's creation (found by the cycle, or by a later \
                 one when the container registered late), by outcome: healed (pulled back by \
                 digest) or lost",
                "outcome",
            ),
            against_plan: counters(
                r,
                "prune_against_plan_total",
                "Images or names the engine removed that the prune's plan did not name (a store \
                 that changed between a look and a DELETE), by outcome: healed (put back) or \
                 lost. Never expected: alert on any",
                "outcome",
            ),
            kept: gauges(
                r,
                "prune_kept_images",
                "Images the last prune cycle kept, by the protection that kept them",
                "protection",
            ),
            images_lost: gauge(
                r,
                "prune_images_lost",
                "Images containers use that a prune removed as the container was created and \
                 could not put back yet (tried again at every cycle): 0 is the only healthy \
                 value",
            ),
            deferred: gauge(
                r,
                "prune_deferred_images",
                "Candidates the last prune cycle left for later (max_removals)",
            ),
            store_images: Measured::new(
                r,
                IntGauge::new(
                    "store_images",
                    "Images in the engine's store after the last prune cycle",
                )
                .expect("a valid metric"),
            ),
            store_bytes: Measured::new(
                r,
                IntGauge::new(
                    "store_bytes",
                    "Size of the engine's image store after the last prune cycle",
                )
                .expect("a valid metric"),
            ),
            disk_used: Measured::new(
                r,
                Gauge::new(
                    "data_root_used_ratio",
                    "Used fraction of the filesystem holding the engine's data root",
                )
                .expect("a valid metric"),
            ),
            build_cache_freed: counter(
                r,
                "build_cache_freed_bytes_total",
                "Bytes the engine reported freed by build-cache pruning",
            ),
        }
    }
}

/// The daemon itself: when it started, whether the engine answers, when work last succeeded.
#[derive(Debug, Clone)]
pub(super) struct DaemonFamilies {
    pub(super) engine_up: IntGauge,
    pub(super) pull_last_success: IntGauge,
    pub(super) prune_last_success: IntGauge,
    pub(super) high_watermark: Gauge,
}

impl DaemonFamilies {
    pub(super) fn new(r: &Registry) -> Self {
        let start = gauge(
            r,
            "start_time_seconds",
            "When this stowage process started (Unix time)",
        );
        start.set(chrono::Utc::now().timestamp());
        DaemonFamilies {
            engine_up: gauge(
                r,
                "engine_up",
                "Whether the container engine answered the daemon's last call (1) or not (0)",
            ),
            pull_last_success: gauge(
                r,
                "pull_last_success_timestamp_seconds",
                "When the last pull run that left every image it covered present finished (Unix \
                 time; 0 before the first)",
            ),
            // Registered only by a config that prunes (see `Metrics::prunes_configured`).
            prune_last_success: IntGauge::new(
                "prune_last_success_timestamp_seconds",
                "When the last prune cycle completed (Unix time; 0 before the first)",
            )
            .expect("a valid metric"),
            high_watermark: Gauge::new(
                "prune_high_watermark_ratio",
                "The configured high watermark, as a fraction of the data root's filesystem",
            )
            .expect("a valid metric"),
        }
    }
}

/// Each required image: how it is pinned and to what, and whether its name drifted.
#[derive(Debug, Clone)]
pub(super) struct ImageFamilies {
    pub(super) info: IntGaugeVec,
    pub(super) drifted: IntGaugeVec,
    pub(super) drift_repairs: IntCounterVec,
    pub(super) update_available: IntGaugeVec,
    pub(super) signature_verified: IntGaugeVec,
    pub(super) signature_checks: IntCounterVec,
}

impl ImageFamilies {
    pub(super) fn new(r: &Registry) -> Self {
        ImageFamilies {
            info: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "image_info",
                        "Each required image (always 1): its pin mode (fixed, lock, first-pull, \
                         follow) and the digest it is pinned to (empty while unknown)",
                    ),
                    &["image", "pin", "digest"],
                )
                .expect("a valid metric"),
            ),
            drifted: gauges(
                r,
                "image_drifted",
                "Whether the image's local name points at other content than the pinned digest \
                 after the last run (1: drift the run could not repair)",
                "image",
            ),
            drift_repairs: counters(
                r,
                "drift_repairs_total",
                "Times a run found an image's local name pointing at other content and pointed \
                 it back at the pinned digest",
                "image",
            ),
            update_available: gauges(
                r,
                "image_update_available",
                "Whether the registry's tag has moved away from the pinned digest (1), as last \
                 checked (pin.check_updates; lock and first-pull pins)",
                "image",
            ),
            signature_verified: gauges(
                r,
                "image_signature_verified",
                "Whether the digest the image was last checked at carries a valid signature by \
                 a key or an identity of its policy (1), or not (0: refused, or pulled anyway under mode = \
                 \"warn\"); images without a signature policy have no series",
                "image",
            ),
            signature_checks: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "signature_checks_total",
                        "Signature checks of digests against the registry (state-file hits \
                         are not counted), by result (verified, refused, warned) and what was \
                         found: the signer (key, identity), or why not (no-signature, \
                         wrong-key, untrusted, bad-payload)",
                    ),
                    &["result", "found"],
                )
                .expect("a valid metric"),
            ),
        }
    }
}

/// What registries say of their request budgets.
#[derive(Debug, Clone)]
pub(super) struct RegistryFamilies {
    pub(super) limit: IntGaugeVec,
    pub(super) remaining: IntGaugeVec,
}

impl RegistryFamilies {
    pub(super) fn new(r: &Registry) -> Self {
        RegistryFamilies {
            limit: gauges(
                r,
                "registry_rate_limit",
                "Requests the registry allows per window, as its last answer to stowage said \
                 (ratelimit-limit; Docker Hub)",
                "registry",
            ),
            remaining: gauges(
                r,
                "registry_rate_limit_remaining",
                "Requests left in the registry's current window, as its last answer to stowage \
                 said (ratelimit-remaining); the engine's own pulls spend it too",
                "registry",
            ),
        }
    }
}

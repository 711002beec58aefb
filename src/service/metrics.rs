//! Prometheus metrics: what the daemon did (pulls, retries, prune cycles, bytes freed, what
//! was kept and why) and what it found (required images present or missing, the store, the
//! disk). Served over HTTP by [`serve`] at `/metrics` when the config has a `[metrics]` table.
//!
//! The daemon records into [`Metrics`] as it goes; nothing here asks the engine, so a scrape
//! is cheap and never waits on dockerd.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::decide::outcome::{Outcome, PullResult};
use crate::decide::shortfall::Missing;
use crate::model::sync::Locked;
use crate::service::pruner::{Cycle, RemovalResult};
use crate::service::shutdown::Shutdown;

/// Every metric the daemon exports, registered in one registry.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
    last_run: IntGaugeVec,
    images: IntCounterVec,
    failures: IntCounterVec,
    attempts: IntCounter,
    pull_seconds: Histogram,
    required: IntGauge,
    missing: IntGauge,
    present: IntGaugeVec,
    ready: IntGauge,
    prune_cycles: IntCounterVec,
    removed: IntCounterVec,
    removed_bytes: IntCounterVec,
    removal_failures: IntCounter,
    races: IntCounterVec,
    kept: IntGaugeVec,
    deferred: IntGauge,
    store_images: IntGauge,
    store_bytes: IntGauge,
    disk_used: Gauge,
    reloads: IntCounterVec,
    build_cache_freed: IntCounter,
    /// The image names `present` has series for.
    present_names: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers `metric` in `registry` and hands it back. Names are fixed and unique, so a
/// failure is a bug in this file.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
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

impl Metrics {
    /// The metrics, all at zero, named `stowage_*`.
    pub(crate) fn new() -> Metrics {
        let r = Registry::new_custom(Some("stowage".to_owned()), None).expect("a valid prefix");
        let build = gauges(&r, "build_info", "The running stowage's version", "version");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            runs: counters(
                &r,
                "pull_runs_total",
                "Pull runs (passes over required images), by trigger: boot, schedule, retry",
                "trigger",
            ),
            last_run: gauges(
                &r,
                "pull_last_run_timestamp_seconds",
                "When the last pull run of each trigger finished (Unix time)",
                "trigger",
            ),
            images: counters(
                &r,
                "pull_images_total",
                "Images handled by pull runs, by result: pulled, up_to_date, tagged, kept, \
                 failed, skipped",
                "result",
            ),
            failures: counters(
                &r,
                "pull_failures_total",
                "Images a run could not get, by failure class: auth, not-found, network, engine",
                "class",
            ),
            attempts: counter(
                &r,
                "registry_attempts_total",
                "Registry attempts made for images (resolutions and pulls, retries included)",
            ),
            pull_seconds: register(
                &r,
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
            required: gauge(&r, "required_images", "Images the config requires"),
            missing: gauge(
                &r,
                "missing_images",
                "Required images that are not present (retried with backoff)",
            ),
            present: gauges(
                &r,
                "image_present",
                "Whether each required image is present (1) or missing (0)",
                "image",
            ),
            ready: gauge(
                &r,
                "ready",
                "Whether the daemon reported ready: every required image present, or \
                 pull.ready_timeout passed",
            ),
            prune_cycles: counters(
                &r,
                "prune_cycles_total",
                "Prune cycles, by trigger: schedule, watermark",
                "trigger",
            ),
            removed: counters(
                &r,
                "prune_removed_images_total",
                "Images removed by pruning, by the rule that selected them",
                "rule",
            ),
            removed_bytes: counters(
                &r,
                "prune_removed_bytes_total",
                "Bytes freed by pruning (image sizes), by rule",
                "rule",
            ),
            removal_failures: counter(
                &r,
                "prune_removal_failures_total",
                "Removals the engine refused or that failed (the image stays; never forced)",
            ),
            races: counters(
                &r,
                "prune_races_total",
                "Removals that raced a container's creation, by outcome: healed (pulled back \
                 by digest) or lost",
                "outcome",
            ),
            kept: gauges(
                &r,
                "prune_kept_images",
                "Images the last prune cycle kept, by the protection that kept them",
                "protection",
            ),
            deferred: gauge(
                &r,
                "prune_deferred_images",
                "Candidates the last prune cycle left for later (max_removals)",
            ),
            store_images: gauge(
                &r,
                "store_images",
                "Images in the engine's store after the last prune cycle",
            ),
            store_bytes: gauge(
                &r,
                "store_bytes",
                "Size of the engine's image store after the last prune cycle",
            ),
            disk_used: register(
                &r,
                Gauge::new(
                    "data_root_used_ratio",
                    "Used fraction of the filesystem holding the engine's data root",
                )
                .expect("a valid metric"),
            ),
            reloads: counters(
                &r,
                "config_reloads_total",
                "Config reloads (SIGHUP), by result: ok, failed (the running config stays)",
                "result",
            ),
            build_cache_freed: counter(
                &r,
                "build_cache_freed_bytes_total",
                "Bytes the engine reported freed by build-cache pruning",
            ),
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
        self.runs.with_label_values(&[trigger]).inc();
        self.last_run
            .with_label_values(&[trigger])
            .set(chrono::Utc::now().timestamp());
        for o in outcomes {
            let result = match &o.result {
                PullResult::Kept => "kept",
                PullResult::Pulled { updated: true, .. } => "pulled",
                PullResult::Pulled { updated: false, .. } => "up_to_date",
                PullResult::Tagged { .. } => "tagged",
                PullResult::Failed { class, .. } => {
                    self.failures.with_label_values(&[class.as_str()]).inc();
                    "failed"
                }
                PullResult::Skipped => "skipped",
            };
            self.images.with_label_values(&[result]).inc();
            self.attempts.inc_by(u64::from(o.attempts));
            if matches!(o.result, PullResult::Pulled { updated: true, .. }) {
                self.pull_seconds.observe(o.elapsed_ms as f64 / 1000.0);
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
                let _ = self.present.remove_label_values(&[gone.as_str()]);
            }
            *shown = required.iter().map(|n| (*n).to_owned()).collect();
        }
        let mut total = 0;
        for name in required {
            total += 1;
            let absent = missing.iter().any(|m| m.name == name);
            self.present
                .with_label_values(&[name])
                .set(i64::from(!absent));
        }
        self.required.set(total);
        self.missing
            .set(i64::try_from(missing.len()).unwrap_or(i64::MAX));
    }

    /// The daemon reported ready.
    pub(crate) fn ready(&self) {
        self.ready.set(1);
    }

    /// A finished prune cycle.
    pub(crate) fn prune(&self, trigger: &str, cycle: &Cycle) {
        let (plan, removals) = (&cycle.plan, &cycle.removals);
        if let Some(bytes) = cycle.build_cache_freed {
            self.build_cache_freed.inc_by(bytes);
        }
        self.prune_cycles.with_label_values(&[trigger]).inc();
        let mut freed = 0;
        for r in removals {
            let rule = r.candidate.rule.name();
            match r.result {
                RemovalResult::Removed => {
                    self.removed.with_label_values(&[rule.as_str()]).inc();
                    self.removed_bytes
                        .with_label_values(&[rule.as_str()])
                        .inc_by(r.candidate.size);
                    freed += r.candidate.size;
                }
                RemovalResult::Failed => self.removal_failures.inc(),
                RemovalResult::Skipped => {}
            }
            match &r.race {
                Some(crate::service::pruner::Race::Healed) => {
                    self.races.with_label_values(&["healed"]).inc();
                }
                Some(crate::service::pruner::Race::Lost { .. }) => {
                    self.races.with_label_values(&["lost"]).inc();
                }
                None => {}
            }
        }
        // Only the last cycle's picture: protections that no longer keep anything go away.
        self.kept.reset();
        for k in &plan.keep {
            self.kept
                .with_label_values(&[k.protection.name().as_str()])
                .inc();
        }
        self.deferred
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
        self.store_images
            .set(i64::try_from(images - removed).unwrap_or(i64::MAX));
        self.store_bytes
            .set(i64::try_from(bytes.saturating_sub(freed)).unwrap_or(i64::MAX));
    }

    /// A config reload, applied or refused.
    pub(crate) fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Disk use of the data root's filesystem, as last measured.
    pub(crate) fn disk(&self, used: u64, total: u64) {
        if total > 0 {
            self.disk_used.set(used as f64 / total as f64);
        }
    }
}

/// Binds the metrics address; the error says which address failed and why.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics.listen {addr}: {e}"))
}

/// At most this many metrics connections at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may wait for a request's headers.
const CONNECTION_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one connection may live, keep-alive included (Prometheus reconnects).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `GET /metrics` on `listener` until `stop` is triggered.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: Shutdown) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Some(accepted) = stop.until(listener.accept()).await else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // A few scrapers at most are expected: beyond that, a connection is closed at once,
        // so nobody can use up the file descriptors the engine connections need.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "metrics: too many connections; closing this one");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // A client that sends no request, or keeps an idle connection, is dropped; a busy
            // one is closed after its current response once the lifetime is up, so the slots
            // turn over.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(CONNECTION_IDLE)
                .serve_connection(io, service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            (StatusCode::OK, prometheus::TEXT_FORMAT, metrics.encode())
        }
        (&hyper::Method::GET, "/") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "stowage: metrics at /metrics\n".to_owned(),
        ),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
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

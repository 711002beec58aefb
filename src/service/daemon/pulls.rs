//! The pull side of the daemon: the first pass (at boot or after a reload), each pull
//! schedule, and the retry of whatever a pass left missing, until stopped.

use std::time::Duration;

use chrono::{DateTime, Local};
use tracing::{debug, error, info, warn};

use super::beats::PullBeat;
use super::prunes::sleep_until;
use crate::decide::outcome::{Outcome, Summary};
use crate::decide::pin::Pinned;
use crate::decide::shortfall::{Shortfall, ready_status, waiting_status};
use crate::io::engine::Engine;
use crate::io::host::give_back_memory;
use crate::policy::retry::RetryPolicy;
use crate::policy::schedule::Schedule;
use crate::policy::window::{Window, next_run};
use crate::service::clock;
use crate::service::metrics::Metrics;
use crate::service::puller::Puller;
use crate::service::readiness::Notifier;
use crate::service::session::Session;

/// How images that a pass left missing are retried: soon at first, then at most every five
/// minutes (a registry that is down for long is not hammered, and one that recovers is used).
const MISSING_RETRY: RetryPolicy = RetryPolicy {
    retries: u32::MAX,
    initial: Duration::from_secs(2),
    max: Duration::from_secs(300),
};

/// A schedule and the images it refreshes.
struct Group {
    schedule: Schedule,
    images: Vec<Pinned>,
    next: Option<DateTime<Local>>,
}

/// Images grouped by the schedule that refreshes them: `pull.schedule` for those without one of
/// their own, then one group per distinct per-image schedule.
fn groups(session: &Session) -> Vec<Group> {
    let config = &session.config;
    let mut groups = vec![Group {
        schedule: config.pull.schedule.clone(),
        images: session.pinned_on(None),
        next: None,
    }];
    for image in &config.images {
        if let Some(s) = &image.schedule
            && !groups.iter().skip(1).any(|g| g.schedule == *s)
        {
            groups.push(Group {
                schedule: s.clone(),
                images: session.pinned_on(Some(s.expr())),
                next: None,
            });
        }
    }
    groups.retain(|g| !g.images.is_empty());
    groups
}

/// The pull side's state between passes.
pub(super) struct Pulls<'a, E> {
    pub(super) session: &'a Session,
    pub(super) puller: &'a Puller<'a, E>,
    pub(super) notifier: &'a Notifier,
    pub(super) metrics: &'a Metrics,
    /// The pull loop's heartbeat.
    pub(super) beat: &'a PullBeat,
    /// This host's fixed delay after each scheduled time.
    pub(super) offset: Duration,
    /// Every required image's name, for the presence series.
    required: Vec<String>,
    /// What is missing, and how often it was retried.
    shortfall: Shortfall,
    /// When the missing images are retried next, if any are missing.
    retry_at: Option<DateTime<Local>>,
}

impl<'a, E: Engine> Pulls<'a, E> {
    pub(super) fn new(
        session: &'a Session,
        puller: &'a Puller<'a, E>,
        notifier: &'a Notifier,
        metrics: &'a Metrics,
        beat: &'a PullBeat,
        offset: Duration,
    ) -> Self {
        Pulls {
            session,
            puller,
            notifier,
            metrics,
            beat,
            offset,
            required: session
                .pinned
                .iter()
                .map(|p| p.image.reference.to_string())
                .collect(),
            shortfall: Shortfall::default(),
            retry_at: None,
        }
    }

    /// The first pass (`first`: its trigger, or `None` when there is none), then each schedule
    /// and each retry of what is missing, until stopped. The service manager hears "ready" once
    /// none is missing.
    pub(super) async fn serve(mut self, first: Option<&str>) {
        self.first_pass(first).await;
        let mut groups = groups(self.session);
        for g in &mut groups {
            g.next = self.next_run(&g.schedule);
            match g.next {
                Some(at) => info!(
                    schedule = g.schedule.expr(),
                    images = g.images.len(),
                    next = %at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    window = self.window().map(Window::describe),
                    "pulls scheduled ({})",
                    g.schedule.describe().trim_end_matches('.').to_lowercase()
                ),
                None => warn!(schedule = g.schedule.expr(), "schedule never fires again"),
            }
        }
        let stop = &self.puller.stop;
        while !stop.is_triggered() {
            let Some((at, group)) = self.next_wake(&groups) else {
                // Nothing scheduled: idle until stopped.
                self.beat.heartbeat.idle("nothing scheduled");
                stop.triggered().await;
                return;
            };
            let doing = if group.is_some() {
                "waiting for the next pull"
            } else {
                "waiting to retry missing images"
            };
            if !sleep_until(at, stop, &self.beat.heartbeat, doing).await {
                return;
            }
            match group {
                None => {
                    let images = self.shortfall.images();
                    self.pass("retry", &images).await;
                }
                Some(index) => {
                    let group = &mut groups[index];
                    self.pass("schedule", &group.images).await;
                    group.next = self.next_run(&group.schedule);
                    if let Some(next) = group.next {
                        debug!(schedule = group.schedule.expr(), next = %next.to_rfc3339(), "next run");
                    }
                }
            }
        }
    }

    /// The pull window refreshes wait for, if any.
    fn window(&self) -> Option<&'a Window> {
        self.session.config.pull.window.as_ref()
    }

    /// When `schedule` runs next: its next time, moved into the pull window.
    fn next_run(&self, schedule: &Schedule) -> Option<DateTime<Local>> {
        next_run(schedule, self.window(), clock::now(), self.offset)
    }

    /// At boot (unless `pull.on_boot` is off), and after each reload: a pass over everything.
    async fn first_pass(&mut self, first: Option<&str>) {
        let Some(trigger) = first else {
            self.notifier
                .ready("ready: no boot pull (pull.on_boot = false)");
            self.metrics.ready();
            return;
        };
        let total = self.session.pinned.len();
        if !self.notifier.is_ready() {
            self.notifier
                .status(&format!("pulling {total} required images"));
        }
        self.pass(trigger, &self.session.pinned).await;
    }

    /// What comes next: the retry of missing images (group `None`) when it is due no later
    /// than a schedule, else the earliest schedule. `None` when nothing ever comes.
    fn next_wake(&self, groups: &[Group]) -> Option<(DateTime<Local>, Option<usize>)> {
        let next_group = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.next.map(|at| (i, at)))
            .min_by_key(|(_, at)| *at);
        match (next_group, self.retry_at) {
            (Some((i, g)), Some(r)) if g < r => Some((g, Some(i))),
            (_, Some(r)) => Some((r, None)),
            (Some((i, g)), None) => Some((g, Some(i))),
            (None, None) => None,
        }
    }

    /// One pass over `images`, then what is missing now, what systemd is told, and when to
    /// retry.
    async fn pass(&mut self, trigger: &str, images: &[Pinned]) {
        let outcomes = pass(self.puller, trigger, images).await;
        match &outcomes {
            Some(outcomes) => self.metrics.pass(trigger, outcomes),
            None => self.metrics.engine_up(false),
        }
        self.metrics.budgets(&self.session.registry.budgets());
        give_back_memory();
        self.shortfall.record(images, outcomes.as_deref());
        let missing = self.shortfall.list();
        let total = self.session.pinned.len();
        self.metrics
            .presence(self.required.iter().map(String::as_str), &missing);
        if missing.is_empty() {
            self.notifier.ready(&ready_status(
                total,
                outcomes.as_deref().unwrap_or_default(),
            ));
            self.metrics.ready();
            self.retry_at = None;
            return;
        }
        self.notifier.status(&waiting_status(&missing, total));
        self.shortfall.attempt += 1;
        let delay = MISSING_RETRY.delay(self.shortfall.attempt, rand::random::<f64>());
        info!(
            missing = missing.len(),
            retry_in = %humantime::format_duration(Duration::from_secs(delay.as_secs().max(1))),
            "not every required image is present; retrying those"
        );
        self.retry_at = Some(clock::now() + delay);
    }
}

/// One pass over `images`: the outcome of each, or `None` when the engine could not be read.
async fn pass<E: Engine>(
    puller: &Puller<'_, E>,
    trigger: &str,
    images: &[Pinned],
) -> Option<Vec<Outcome>> {
    info!(trigger, images = images.len(), "run started");
    match puller.converge(images).await {
        Ok(outcomes) => {
            let s = Summary::of(&outcomes);
            info!(
                trigger,
                pulled = s.pulled,
                up_to_date = s.up_to_date,
                tagged = s.tagged,
                kept = s.kept,
                failed = s.failed,
                skipped = s.skipped,
                deferred = s.deferred,
                "run finished"
            );
            Some(outcomes)
        }
        Err(failure) => {
            error!(trigger, "run failed: engine: {failure}");
            None
        }
    }
}

//! The one stop signal every long-running part obeys, and the waits built on it.
//!
//! A [`Shutdown`] is triggered once (SIGTERM, a reload replacing a config, the end of a
//! command). After that no new pull, retry or removal starts: every sleep, retry loop and
//! engine wait in the daemon goes through the methods below, so none of them can forget to
//! stop. Work already under way gets a grace period through [`Shutdown::drain`].

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::policy::retry::RetryPolicy;

/// A stop signal: cheap to clone, and every clone sees the same trigger.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

/// What an operation tried with [`Shutdown::retry`] asks for after an attempt.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// It worked, or failed for good: stop trying.
    Done(T),
    /// It failed, and may work later: try again after the policy's delay.
    Again(E),
}

/// How a [`Shutdown::retry`] loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried<T, E> {
    /// It worked, or failed for good.
    Done(T),
    /// Triggered before the first attempt (`None`), or while waiting to retry after a failure.
    Stopped(Option<E>),
}

impl Shutdown {
    /// A signal not triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A signal triggered with this one, and also on its own (a config's work stops when the
    /// process stops, and also when a reload replaces it).
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }

    /// Triggers it: nothing new starts after this.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once triggered.
    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// Sleeps for `delay`; false when triggered first. A trigger wins a tie, so a zero delay
    /// never starts one more attempt after a stop.
    pub async fn sleep(&self, delay: Duration) -> bool {
        self.until(tokio::time::sleep(delay)).await.is_some()
    }

    /// The output of `work`, or `None` when triggered first (`work` is then dropped).
    pub async fn until<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.0.cancelled() => None,
            out = work => Some(out),
        }
    }

    /// Triggers it, then lets `work` (which obeys it) finish within `grace`: its output, or
    /// `None` when it was abandoned (dropped) at the end of the grace period.
    pub async fn drain<F: Future>(&self, grace: Duration, work: F) -> Option<F::Output> {
        self.trigger();
        tokio::time::timeout(grace, work).await.ok()
    }

    /// Runs `attempt` (given the attempt's number, from 1) until it is done, waiting
    /// `policy`'s delay (with jitter) between tries and calling `on_retry` with the failure,
    /// the attempt number and the delay. An attempt under way is never cut short; no new one
    /// starts once triggered. Returns how it ended and the attempts made.
    pub async fn retry<T, E, F, Fut>(
        &self,
        policy: RetryPolicy,
        attempt: F,
        on_retry: impl FnMut(&E, u32, Duration),
    ) -> (Retried<T, E>, u32)
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        self.retry_after(policy, None, attempt, on_retry).await
    }

    /// [`Self::retry`] for an operation already tried `failed.0` times, the last of which
    /// failed with `failed.1` (worth trying again): it waits the delay of that retry, then
    /// goes on from the next attempt number, as if the loop had never been left.
    pub async fn retry_after<T, E, F, Fut>(
        &self,
        policy: RetryPolicy,
        failed: Option<(u32, E)>,
        mut attempt: F,
        mut on_retry: impl FnMut(&E, u32, Duration),
    ) -> (Retried<T, E>, u32)
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let mut tries = 0;
        match failed {
            Some((made, e)) => {
                tries = made;
                let delay = policy.delay(tries, rand::random::<f64>());
                on_retry(&e, tries, delay);
                if !self.sleep(delay).await {
                    return (Retried::Stopped(Some(e)), tries);
                }
            }
            None if self.is_triggered() => return (Retried::Stopped(None), tries),
            None => {}
        }
        loop {
            tries += 1;
            match attempt(tries).await {
                Attempt::Done(result) => return (Retried::Done(result), tries),
                Attempt::Again(e) if self.is_triggered() => {
                    return (Retried::Stopped(Some(e)), tries);
                }
                Attempt::Again(e) => {
                    let delay = policy.delay(tries, rand::random::<f64>());
                    on_retry(&e, tries, delay);
                    if !self.sleep(delay).await {
                        return (Retried::Stopped(Some(e)), tries);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        retries: u32::MAX,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_early_on_a_trigger_and_a_trigger_wins_a_tie() {
        let s = Shutdown::new();
        assert!(s.sleep(Duration::from_secs(5)).await);
        let t = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            t.trigger();
        });
        let started = tokio::time::Instant::now();
        assert!(!s.sleep(Duration::from_secs(3600)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            !s.sleep(Duration::ZERO).await,
            "a stop wins over a zero delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_stops_with_its_parent_but_not_the_other_way() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        assert!(other.is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_until_done() {
        let s = Shutdown::new();
        let mut calls = 0;
        let mut delays = Vec::new();
        let result = s
            .retry(
                POLICY,
                |n| {
                    calls += 1;
                    async move {
                        if n < 4 {
                            Attempt::Again("down")
                        } else {
                            Attempt::Done(Ok::<_, &str>(n))
                        }
                    }
                },
                |_, tries, delay| delays.push((tries, delay)),
            )
            .await;
        assert_eq!(result, (Retried::Done(Ok(4)), 4));
        assert_eq!(calls, 4);
        assert_eq!(delays.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2, 3]);
        // Each delay is within the policy's bounds and grows.
        assert!(delays.iter().all(|(_, d)| *d <= POLICY.max));
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_taken_up_after_a_failure_waits_its_retry_then_numbers_on() {
        let s = Shutdown::new();
        let mut numbers = Vec::new();
        let mut retries = Vec::new();
        let result = s
            .retry_after(
                POLICY,
                Some((1, "down")),
                |n| {
                    numbers.push(n);
                    async move {
                        if n < 3 {
                            Attempt::Again("down")
                        } else {
                            Attempt::Done(Ok::<_, &str>(n))
                        }
                    }
                },
                |e, tries, _| retries.push((*e, tries)),
            )
            .await;
        assert_eq!(result, (Retried::Done(Ok(3)), 3));
        // The first attempt was made before: not again.
        assert_eq!(numbers, [2, 3]);
        // The failure it was handed is told as the first retry's, like any other.
        assert_eq!(retries, [("down", 1), ("down", 2)]);
        // Stopped while waiting for that retry: the failure it was handed is the end.
        let stopped = Shutdown::new();
        stopped.trigger();
        let ended = stopped
            .retry_after(
                POLICY,
                Some((1, "down")),
                |_| async { Attempt::<(), &str>::Done(()) },
                |_, _, _| {},
            )
            .await;
        assert_eq!(ended, (Retried::Stopped(Some("down")), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_ends_a_retry_loop_and_a_fatal_failure_ends_it_at_once() {
        let s = Shutdown::new();
        let t = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            t.trigger();
        });
        let (never, tries) = s
            .retry(
                POLICY,
                |_| async { Attempt::<(), _>::Again("down") },
                |_, _, _| {},
            )
            .await;
        assert_eq!(never, Retried::Stopped(Some("down")));
        assert!(tries > 1);
        let (late, tries) = s
            .retry(
                POLICY,
                |_| async { Attempt::<(), &str>::Again("down") },
                |_, _, _| {},
            )
            .await;
        assert_eq!((late, tries), (Retried::Stopped(None), 0));
        let fatal = Shutdown::new()
            .retry(
                POLICY,
                |_| async { Attempt::<_, &str>::Done(Err::<(), _>("bad address")) },
                |_, _, _| panic!("not retried"),
            )
            .await;
        assert_eq!(fatal, (Retried::Done(Err("bad address")), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_triggers_then_waits_at_most_the_grace() {
        let s = Shutdown::new();
        let obeying = {
            let s = s.clone();
            async move {
                s.triggered().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                "finished"
            }
        };
        assert_eq!(
            s.drain(Duration::from_secs(5), obeying).await,
            Some("finished")
        );
        let stuck = std::future::pending::<()>();
        let started = tokio::time::Instant::now();
        assert_eq!(
            Shutdown::new().drain(Duration::from_secs(5), stuck).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}

//! The progress bar of `stowage pull` on a terminal: images done out of the total, and what is
//! being pulled. Only when a person watches: standard error is a terminal, the logs are not
//! JSON, and it is not the journal. Log lines go above the bar while it shows.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::sync::Locked;
use crate::service::progress::{Progress, Step};

/// The bar showing now, if any: log lines are written around it.
static SHOWING: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A pull run's bar.
pub(super) struct PullBar {
    bar: ProgressBar,
}

impl PullBar {
    /// A bar on standard error, drawn until [`Self::finish`].
    pub(super) fn show() -> PullBar {
        PullBar::on(ProgressDrawTarget::stderr())
    }

    fn on(target: ProgressDrawTarget) -> PullBar {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} images [{elapsed}] {wide_msg}")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("reading the store");
        *SHOWING.locked() = Some(bar.clone());
        PullBar { bar }
    }

    /// Takes the bar away, before the report is printed.
    pub(super) fn finish(self) {
        SHOWING.locked().take();
        self.bar.finish_and_clear();
    }
}

impl Progress for PullBar {
    fn step(&self, step: Step<'_>) {
        match step {
            Step::Planning => self.bar.set_message("reading the store and the registries"),
            Step::Planned(n) => {
                self.bar.set_length(u64::try_from(n).unwrap_or(u64::MAX));
                self.bar.set_message("pulling");
            }
            Step::Attempt(image) => self.bar.set_message(image.to_string()),
            Step::Bytes(image, done, all) => self.bar.set_message(format!(
                "{image} {}/{}",
                super::report::bytes(done),
                super::report::bytes(all)
            )),
            Step::Retry(delay) => self.bar.set_message(format!(
                "waiting {} to retry",
                humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)))
            )),
            Step::Settled => self.bar.inc(1),
            Step::Removing(_) => {}
        }
    }
}

/// Standard error for log lines: above the bar while one shows.
pub(super) struct AroundTheBar;

impl Write for AroundTheBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let showing = SHOWING.locked().clone();
        match showing {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reference::ImageRef;

    #[test]
    fn the_bar_counts_settled_images_out_of_the_planned_ones() {
        let bar = PullBar::on(ProgressDrawTarget::hidden());
        let image: ImageRef = "r.example/a:1".parse().unwrap();
        bar.step(Step::Planning);
        bar.step(Step::Planned(3));
        bar.step(Step::Attempt(&image));
        assert_eq!(bar.bar.message(), "r.example/a:1");
        bar.step(Step::Bytes(&image, 1536, 4096));
        assert_eq!(bar.bar.message(), "r.example/a:1 1.5 kB/4.1 kB");
        bar.step(Step::Settled);
        bar.step(Step::Retry(Duration::from_millis(300)));
        assert_eq!(bar.bar.message(), "waiting 1s to retry");
        bar.step(Step::Settled);
        assert_eq!((bar.bar.position(), bar.bar.length()), (2, Some(3)));
        assert!(SHOWING.locked().is_some());
        bar.finish();
        assert!(SHOWING.locked().is_none());
    }
}

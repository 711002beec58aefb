//! Validation of `[pull.window]` and `[prune.window]`: a cron start, a duration, a time zone.

use std::time::Duration;

use super::raw::RawWindow;
use super::validator::Validator;
use crate::policy::window::{Window, Zone};

impl Validator<'_> {
    /// One window table; `None` (with the problems recorded) when any part is wrong.
    pub(super) fn window(&mut self, key: &str, raw: RawWindow) -> Option<Window> {
        let start = self.schedule(&format!("{key}.start"), &raw.start);
        let duration_key = format!("{key}.duration");
        let length = self.duration(&duration_key, Some(raw.duration.clone()), Duration::ZERO);
        if length.is_zero() && humantime::parse_duration(raw.duration.get_ref()).is_ok() {
            self.problem(
                raw.duration.span(),
                format!(
                    "{duration_key}: \"{}\" must be more than zero",
                    raw.duration.get_ref()
                ),
            );
        }
        let zone = match &raw.time_zone {
            None => Some(Zone::host()),
            Some(z) => match Zone::named(z.get_ref()) {
                Ok(zone) => Some(zone),
                Err(e) => {
                    self.problem(
                        z.span(),
                        format!(
                            "{key}.time_zone: unknown time zone \"{}\" (write an IANA name from \
                             the system's database, /usr/share/zoneinfo, e.g. \"Europe/Berlin\" \
                             or \"UTC\"; leave it out for the host's own): {e}",
                            z.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let window = Window {
            start: start?,
            length: Some(length).filter(|l| !l.is_zero())?,
            zone: zone?,
        };
        if !window.closes(chrono::Utc::now()) {
            self.problem(
                raw.start.span(),
                format!(
                    "{key}: the window never closes: \"{}\" opens again before {} have passed \
                     (shorten the duration, or open it less often)",
                    raw.start.get_ref(),
                    humantime::format_duration(length)
                ),
            );
            return None;
        }
        Some(window)
    }
}

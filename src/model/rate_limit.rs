//! What registries say about their request budgets, as plain data.
//!
//! Docker Hub reports its pull limit on manifest GETs and HEADs (a HEAD does not count against
//! it): `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`, the count and the
//! window in seconds. Any registry may answer 429 with `Retry-After`, in seconds or as an
//! HTTP date.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// A registry's budget as its last answer stated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the current window.
    pub remaining: u64,
    /// The window's length in seconds, when the registry says.
    pub window_secs: Option<u64>,
}

/// One quota header value: `76;w=21600` is 76 in a window of 21,600 s. Extra parameters are
/// ignored; a value that does not start with a count is not a quota.
pub(crate) fn parse_quota(value: &str) -> Option<(u64, Option<u64>)> {
    let mut parts = value.split(';');
    let count = parts.next()?.trim().parse().ok()?;
    let window = parts
        .filter_map(|p| p.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse().ok());
    Some((count, window))
}

/// The budget from the `ratelimit-limit` and `ratelimit-remaining` header values, when both
/// are there and readable.
pub(crate) fn budget(limit: Option<&str>, remaining: Option<&str>) -> Option<Budget> {
    let (limit, window) = parse_quota(limit?)?;
    let (remaining, remaining_window) = parse_quota(remaining?)?;
    Some(Budget {
        limit,
        remaining,
        window_secs: window.or(remaining_window),
    })
}

/// How long a `Retry-After` value asks to wait from `now`: delta seconds, or an HTTP date
/// (zero when that date has passed). `None` when it is neither.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_hub_headers() {
        assert_eq!(
            budget(Some("100;w=21600"), Some("76;w=21600")),
            Some(Budget {
                limit: 100,
                remaining: 76,
                window_secs: Some(21600)
            })
        );
        assert_eq!(
            budget(Some("200"), Some("0")),
            Some(Budget {
                limit: 200,
                remaining: 0,
                window_secs: None
            })
        );
        assert_eq!(budget(Some("100;w=21600"), None), None);
        assert_eq!(budget(Some("lots"), Some("1")), None);
        assert_eq!(
            parse_quota(" 5 ; w=60 ; comment=\"x\""),
            Some((5, Some(60)))
        );
        assert_eq!(parse_quota("-1"), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Wed, 01 Dec 2027 10:00:00 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 01 Dec 2027 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Wed, 01 Dec 2027 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    proptest! {
        #[test]
        fn quotas_read_back_what_was_written(count in any::<u64>(), window in proptest::option::of(any::<u64>())) {
            let text = match window {
                Some(w) => format!("{count};w={w}"),
                None => count.to_string(),
            };
            prop_assert_eq!(parse_quota(&text), Some((count, window)));
        }

        #[test]
        fn any_header_text_is_read_or_refused_without_panic(s in ".{0,40}") {
            let _ = parse_quota(&s);
            let _ = retry_after(&s, SystemTime::UNIX_EPOCH);
        }
    }
}

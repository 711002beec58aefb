use super::*;
use proptest::prelude::*;

fn window(start: &str, length: &str, zone: &str) -> Window {
    Window {
        start: start.parse().unwrap(),
        length: humantime::parse_duration(length).unwrap(),
        zone: Zone::named(zone).unwrap(),
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn a_window_across_midnight_is_open_until_it_closes_the_next_day() {
    let w = window("0 22 * * *", "4h", "UTC");
    let open = w.open_at(utc("2027-01-01T23:00:00Z")).unwrap();
    assert_eq!(open.opens, utc("2027-01-01T22:00:00Z"));
    assert_eq!(open.closes, utc("2027-01-02T02:00:00Z"));
    assert_eq!(w.open_at(utc("2027-01-02T01:59:59Z")), Some(open));
    assert_eq!(w.open_at(utc("2027-01-02T02:00:00Z")), None);
    assert_eq!(w.open_at(utc("2027-01-01T21:59:59Z")), None);
    let next = w.current_or_next(utc("2027-01-02T02:00:00Z")).unwrap();
    assert_eq!(next.opens, utc("2027-01-02T22:00:00Z"));
    // Due at noon: waits for 22:00, then the host's offset.
    assert_eq!(
        w.start_for(utc("2027-01-02T12:00:00Z"), Duration::from_secs(600)),
        Some(utc("2027-01-02T22:10:00Z"))
    );
    // Due inside: now.
    assert_eq!(
        w.start_for(utc("2027-01-02T23:30:00Z"), Duration::from_secs(600)),
        Some(utc("2027-01-02T23:30:00Z"))
    );
}

#[test]
fn the_zone_decides_when_it_opens() {
    let w = window("0 2 * * *", "1h", "Europe/Berlin");
    // 02:00 in Berlin is 01:00 UTC in winter, 00:00 UTC in summer.
    let winter = w.current_or_next(utc("2027-01-10T12:00:00Z")).unwrap();
    assert_eq!(winter.opens, utc("2027-01-11T01:00:00Z"));
    let summer = w.current_or_next(utc("2027-07-10T12:00:00Z")).unwrap();
    assert_eq!(summer.opens, utc("2027-07-11T00:00:00Z"));
}

/// The openings from `from` for `days` days.
fn openings(w: &Window, from: DateTime<Utc>, days: i64) -> Vec<Opening> {
    let end = from + chrono::Duration::days(days);
    let mut out = Vec::new();
    let mut t = from;
    while let Some(o) = w.current_or_next(t) {
        if o.opens >= end {
            break;
        }
        out.push(o);
        t = o.closes;
    }
    out
}

#[test]
fn dst_changes_keep_one_opening_a_day_of_real_length() {
    // Berlin: 2027-03-28 02:00 -> 03:00 (02:30 does not exist); 2027-10-31 03:00 -> 02:00
    // (02:30 happens twice).
    let w = window("30 2 * * *", "1h", "Europe/Berlin");
    for (from, name) in [
        ("2027-03-25T00:00:00Z", "spring"),
        ("2027-10-28T00:00:00Z", "autumn"),
    ] {
        let seen = openings(&w, utc(from), 7);
        assert_eq!(seen.len(), 7, "{name}: {seen:#?}");
        for o in &seen {
            assert_eq!(
                o.closes - o.opens,
                chrono::Duration::hours(1),
                "{name}: {o:?}"
            );
        }
        let days: std::collections::BTreeSet<_> = seen
            .iter()
            .map(|o| w.zone.wall(o.opens).unwrap().date())
            .collect();
        assert_eq!(days.len(), 7, "{name}: one per local day: {seen:#?}");
    }
}

#[test]
fn overlapping_openings_merge_into_one_stretch() {
    let w = window("0 */2 * * *", "3h", "UTC");
    let open = w.open_at(utc("2027-01-01T00:30:00Z")).unwrap();
    // Every opening comes before the last has closed: open for as long as can be counted.
    assert!(
        open.closes - open.opens > chrono::Duration::days(30),
        "{open:?}"
    );
    assert!(!w.closes(utc("2027-01-01T00:30:00Z")));
    assert!(window("0 */2 * * *", "119m", "UTC").closes(utc("2027-01-01T00:30:00Z")));
    let w = window("0 0,4 * * *", "4h", "UTC");
    let open = w.open_at(utc("2027-01-01T01:00:00Z")).unwrap();
    assert_eq!(
        open.closes,
        utc("2027-01-01T08:00:00Z"),
        "back to back: one stretch"
    );
}

#[test]
fn a_window_that_never_opens_again_says_so() {
    let w = window("0 0 1 1 *", "1h", "UTC");
    assert!(w.current_or_next(utc("2027-06-01T00:00:00Z")).is_some());
    assert_eq!(
        w.describe(),
        format!("{}, for 1h (UTC)", w.start.describe())
    );
}

const STARTS: &[&str] = &[
    "0 22 * * *",
    "30 2 * * *",
    "0 3 * * 6",
    "15 1,13 * * *",
    "0 0 1 * *",
    "45 23 * * 1-5",
];
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
];

fn any_window() -> impl Strategy<Value = Window> {
    (
        prop::sample::select(STARTS),
        60u64..20 * 3600,
        prop::sample::select(ZONES),
    )
        .prop_map(|(start, secs, zone)| Window {
            start: start.parse().unwrap(),
            length: Duration::from_secs(secs),
            zone: Zone::named(zone).unwrap(),
        })
}

/// Any second from 2026 to 2029: every DST change of those zones in between.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (1_767_225_600i64..1_861_920_000).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn open_or_closed_is_consistent(w in any_window(), now in any_time()) {
        let second = chrono::Duration::seconds(1);
        match w.open_at(now) {
            Some(open) => {
                prop_assert!(open.contains(now), "{open:?} {now}");
                prop_assert!(open.closes - open.opens >= w.length(), "{open:?}");
                // Open throughout, and closed right at the end (unless merged past counting:
                // such a window never closes, and the config refuses it).
                if open.closes - open.opens < chrono::Duration::days(100) {
                    let closes = |o: Option<Opening>| o.map(|o| o.closes);
                    prop_assert_eq!(closes(w.open_at(open.closes - second)), Some(open.closes));
                    prop_assert_eq!(w.open_at(open.closes), None);
                }
            }
            None => {
                let next = w.current_or_next(now).unwrap();
                prop_assert!(next.opens > now, "{next:?} {now}");
                let mid = now + (next.opens - now) / 2;
                prop_assert_eq!(w.open_at(mid), None);
                if next.opens - second >= now {
                    prop_assert_eq!(w.open_at(next.opens - second), None);
                }
                prop_assert_eq!(w.open_at(next.opens), Some(next));
            }
        }
    }

    /// Whatever the splay, even one longer than the window, deferred work starts while the
    /// window is open, and never before it was due.
    #[test]
    fn work_starts_inside_a_window_and_not_before_it_is_due(
        w in any_window(),
        due in any_time(),
        offset_secs in 0u64..3 * 86_400,
    ) {
        let start = w.start_for(due, Duration::from_secs(offset_secs)).unwrap();
        prop_assert!(start >= due, "{start} < {due}");
        let open = w.open_at(start);
        prop_assert!(open.is_some(), "{start} is outside {:?}", w.current_or_next(start));
        if start > due {
            // Deferred: to the first opening after it fell due, never a later one.
            let first = w.current_or_next(due).unwrap();
            prop_assert_eq!(open.unwrap().opens, first.opens);
            prop_assert!(start - first.opens < w.length());
        }
    }
}

#[test]
fn an_opening_moved_past_a_skipped_hour_is_found_from_inside_the_gap() {
    // New York, 2026-03-08: 02:00 EST -> 03:00 EDT (07:00Z). 02:30 does not exist that day
    // and opens at 03:30 EDT (07:30Z); at 03:00 EDT the wall clock is past 02:30 already.
    let w = window("30 2 * * *", "1h", "America/New_York");
    let now = utc("2026-03-08T07:00:00Z");
    assert_eq!(w.open_at(now), None);
    let next = w.current_or_next(now).unwrap();
    assert_eq!(next.opens, utc("2026-03-08T07:30:00Z"));
    assert_eq!(w.open_at(utc("2026-03-08T07:45:00Z")), Some(next));
}

#[test]
fn a_minutely_window_is_found_inside_a_repeated_hour() {
    // Berlin, 2027-10-31: 03:00 CEST -> 02:00 CET (01:00Z); 02:00-02:59 happen twice. In the
    // second pass every wall-clock match names an instant in the first ("compatible").
    let w = window("* 2 * * *", "30s", "Europe/Berlin");
    let now = utc("2027-10-31T01:10:10Z");
    let next = w.current_or_next(now).unwrap();
    assert!(next.opens > now, "{next:?}");
    assert_eq!(next.opens, utc("2027-11-01T01:00:00Z"));
}

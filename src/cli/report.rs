//! What `plan`, `pull`, `status` and `pin` print: aligned text for people, JSON for machines.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::decide::outcome::{Outcome, PullResult, Summary};
use crate::decide::pin::PinMode;
use crate::decide::prune_plan::{Protection, PrunePlan, Rule, UseSource};
use crate::decide::pull_plan::{Action, Decision, Presence};
use crate::model::failure::FailureClass;
use crate::model::signature::Check;
use crate::policy::config::Config;
use crate::policy::lockfile::LockChange;
use crate::policy::window::Window;
use crate::service::pruner::{Cycle, LateRace, LostImage, Race, Removal, RemovalResult};

/// The first 12 hex digits of a digest or an image ID, as `docker images` shows IDs: enough to
/// tell them apart in a column that says what it holds, and 7 characters narrower than with
/// `sha256:` (three digest columns in `status`). `--json` has them whole.
pub(super) fn short(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) => hex[..hex.len().min(12)].to_owned(),
        None => digest.to_owned(),
    }
}

/// The image as a table shows it: a digest in the name shortened as the DIGEST columns are
/// (one `name:tag@sha256:...` would otherwise widen every row by 57 characters); JSON keeps
/// the whole name.
fn display_name(d: &Decision) -> String {
    let full = d.pinned.image.reference.to_string();
    let name = match full.split_once('@') {
        // Still a reference to read: the algorithm stays.
        Some((name, digest)) => format!("{name}@sha256:{}", short(digest)),
        None => full,
    };
    match &d.pinned.image.platform {
        Some(p) => format!("{name} [{p}]"),
        None => name,
    }
}

fn presence(p: Presence) -> &'static str {
    match p {
        Presence::Missing => "missing",
        Presence::Present => "present",
    }
}

/// Renders rows as columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_within(header, rows, width())
}

/// How wide output may be: `COLUMNS` when set (shells set it), else the terminal's width, else
/// 80 (a pipe, a file, a journal).
pub(super) fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w| *w >= 40)
        .or_else(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
        .unwrap_or(80)
}

/// Wrapping at spaces only: a digest, a path or a name (`stowage-test/app:1`) is never cut,
/// so it can be copied and searched for whole; one longer than the line stands out past it.
fn unbroken(width: usize) -> textwrap::Options<'static> {
    textwrap::Options::new(width)
        .break_words(false)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
}

/// A sentence for people, wrapped within the terminal, with its line break.
pub(super) fn paragraph(text: &str) -> String {
    textwrap::fill(text, unbroken(width())) + "\n"
}

/// The narrowest the last column is wrapped to, however wide the others are.
const LAST_COLUMN_MIN: usize = 24;

/// A table whose last column (the free text: WHY, NOTE) wraps within `width`, its further
/// lines under its first; the other columns as wide as their widest cell.
fn table_within(header: &[&str], rows: &[Vec<String>], width: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = header.len() - 1;
    let indent = widths[..last].iter().map(|w| w + 2).sum::<usize>();
    if indent + LAST_COLUMN_MIN > width && last > 1 {
        return blocks(header, rows, width);
    }
    let room = width.saturating_sub(indent).max(LAST_COLUMN_MIN);
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate().take(last) {
            let _ = write!(l, "{c:<w$}  ", w = widths[i]);
        }
        let text = cells.get(last).copied().unwrap_or_default();
        for (n, part) in textwrap::wrap(text, unbroken(room)).iter().enumerate() {
            if n > 0 {
                out.push_str(l.trim_end());
                out.push('\n');
                l = " ".repeat(indent);
            }
            l.push_str(part);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A table too wide for the terminal (long image names), as one block per row: the first
/// cell on its own line, the middle cells as `column value` pairs under it, then the last
/// column's text, both wrapped within `width`. A row whose first cell is empty (an image's
/// further names in `prune`) adds its cells to the block above.
fn blocks(header: &[&str], rows: &[Vec<String>], width: usize) -> String {
    const INDENT: &str = "    ";
    let room = width.saturating_sub(INDENT.len()).max(LAST_COLUMN_MIN);
    let last = header.len() - 1;
    let mut out = String::new();
    for row in rows {
        let first = row.first().map(String::as_str).unwrap_or_default();
        if !first.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "{first}");
        }
        let pairs: Vec<String> = header[1..last]
            .iter()
            .zip(row.iter().skip(1))
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("{} {value}", name.to_lowercase()))
            .collect();
        for line in packed(&pairs, room) {
            let _ = writeln!(out, "{INDENT}{line}");
        }
        let text = row.get(last).map(String::as_str).unwrap_or_default();
        for line in textwrap::wrap(text, unbroken(room)) {
            if !line.is_empty() {
                let _ = writeln!(out, "{INDENT}{line}");
            }
        }
    }
    out
}

/// `pairs` on lines of at most `room` characters, two spaces apart; a pair is never split.
fn packed(pairs: &[String], room: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for pair in pairs {
        match lines.last_mut() {
            Some(line) if line.len() + 2 + pair.len() <= room => {
                line.push_str("  ");
                line.push_str(pair);
            }
            _ => lines.push(pair.clone()),
        }
    }
    lines
}

/// The `plan` table.
pub(super) fn plan_text(plan: &[Decision]) -> String {
    plan_text_within(plan, width())
}

fn plan_text_within(plan: &[Decision], width: usize) -> String {
    if plan.is_empty() {
        return "no images are required by the configuration\n".into();
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|d| {
            vec![
                display_name(d),
                d.pinned.mode.as_str().to_owned(),
                d.digest.as_deref().map(short).unwrap_or_else(|| "-".into()),
                presence(d.state).to_owned(),
                d.action.as_str().to_owned(),
                d.reason.clone(),
            ]
        })
        .collect();
    let mut out = table_within(
        &["IMAGE", "PIN", "DIGEST", "STATE", "ACTION", "WHY"],
        &rows,
        width,
    );
    let n = PlanSummary::of(plan);
    let _ = writeln!(
        out,
        "\n{} to pull, {} to tag, {} to keep, {} failing",
        n.pull, n.tag, n.keep, n.fail
    );
    // A plan asks no registry about a digest a file pins: say so where it matters, since
    // that digest may be gone from the registry (`status` asks).
    let unasked = plan.iter().any(|d| {
        d.action == Action::Pull && matches!(d.pinned.mode, PinMode::Lock | PinMode::Fixed)
    });
    if unasked {
        out.push_str(&textwrap::fill(
            "the digests the lock or the config pins were not checked with their registries: \
             `stowage status` asks whether they are still there",
            unbroken(width),
        ));
        out.push('\n');
    }
    out
}

/// How many required images a plan does what to: the counts under its table, and its JSON's
/// `summary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(super) struct PlanSummary {
    /// Images to pull.
    pub pull: usize,
    /// Images whose name is to be pointed at content already present.
    pub tag: usize,
    /// Images present as required: nothing to do.
    pub keep: usize,
    /// Images nothing can be done for (their digest is unknown and they are not present).
    pub fail: usize,
}

impl PlanSummary {
    pub(super) fn of(plan: &[Decision]) -> PlanSummary {
        let count = |a: Action| plan.iter().filter(|d| d.action == a).count();
        PlanSummary {
            pull: count(Action::Pull),
            tag: count(Action::Tag),
            keep: count(Action::Keep),
            fail: count(Action::Fail),
        }
    }

    /// Whether everything is as declared: nothing to pull, tag or fail.
    pub(super) fn settled(self) -> bool {
        self.pull + self.tag + self.fail == 0
    }
}

/// The version of the shape of every `--json` document (`version`, their first key). Raised
/// when a key is renamed or removed or changes meaning; a new key does not raise it. The
/// schemas are in `docs/json/`.
pub(crate) const JSON_VERSION: u32 = 1;

/// Where one maintenance window stands at a moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct WindowView {
    /// "At 02:00 AM, for 4h (Europe/Berlin)".
    window: String,
    /// Whether it is open now.
    open: bool,
    /// When the stretch open now opened, or the next one opens (RFC 3339); none if never.
    opens: Option<String>,
    /// When that stretch closes.
    closes: Option<String>,
}

impl WindowView {
    fn of(w: &Window, now: chrono::DateTime<chrono::Utc>) -> WindowView {
        let stretch = w.current_or_next(now);
        WindowView {
            window: w.describe(),
            open: w.open_at(now).is_some(),
            opens: stretch.map(|o| o.opens.to_rfc3339()),
            closes: stretch.map(|o| o.closes.to_rfc3339()),
        }
    }

    /// "open now, until …" or "closed; opens … until …".
    fn line(&self) -> String {
        let at = |t: &Option<String>| t.clone().unwrap_or_else(|| "never".into());
        if self.open {
            format!("{}: open now, until {}", self.window, at(&self.closes))
        } else {
            format!(
                "{}: closed; opens {} until {}",
                self.window,
                at(&self.opens),
                at(&self.closes)
            )
        }
    }
}

/// The config's maintenance windows as they stand at `now`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct Windows {
    /// Scheduled refreshes of present images (`[pull.window]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pull: Option<WindowView>,
    /// Scheduled prune cycles (`[prune.window]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<WindowView>,
}

impl Windows {
    pub(super) fn of(config: &Config, now: chrono::DateTime<chrono::Utc>) -> Windows {
        Windows {
            pull: config.pull.window.as_ref().map(|w| WindowView::of(w, now)),
            prune: config
                .prune
                .as_ref()
                .and_then(|p| p.window.as_ref())
                .map(|w| WindowView::of(w, now)),
        }
    }

    fn is_empty(&self) -> bool {
        self.pull.is_none() && self.prune.is_none()
    }

    /// One line per window, for the text reports; empty without windows.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        if let Some(w) = &self.pull {
            let _ = writeln!(
                out,
                "Pull window (refreshes of present images; missing images never wait): {}",
                w.line()
            );
        }
        if let Some(w) = &self.prune {
            let _ = writeln!(
                out,
                "Prune window (scheduled cycles; the high watermark never waits): {}",
                w.line()
            );
        }
        out
    }
}

/// The `plan --json` document.
pub(super) fn plan_json(
    config: &Path,
    plan: &[Decision],
    prune: Option<&PrunePlan>,
    windows: &Windows,
) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        #[serde(serialize_with = "lossy_path")]
        config: &'a Path,
        images: &'a [Decision],
        summary: PlanSummary,
        /// What a prune cycle would do now, when the config has `[prune]` rules.
        #[serde(skip_serializing_if = "Option::is_none")]
        prune: Option<serde_json::Value>,
        /// The maintenance windows, when the config has any.
        #[serde(skip_serializing_if = "Windows::is_empty")]
        windows: &'a Windows,
    }
    let doc = Doc {
        version: JSON_VERSION,
        config,
        images: plan,
        summary: PlanSummary::of(plan),
        prune: prune.map(|p| prune_json(p, None)),
        windows,
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

/// The `pull` report: one line per image (its detail under it when the line would be wider
/// than the terminal), then a summary. The words are the JSON's `result`s.
pub(super) fn pull_text(outcomes: &[Outcome]) -> String {
    pull_text_within(outcomes, width())
}

fn pull_text_within(outcomes: &[Outcome], columns: usize) -> String {
    let width = outcomes
        .iter()
        .map(|o| display_name(&o.decision).len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for o in outcomes {
        let name = display_name(&o.decision);
        let secs = o.elapsed_ms as f64 / 1000.0;
        let digest = |d: &Option<String>| d.as_deref().map_or_else(|| "-".into(), short);
        let (word, detail) = match &o.result {
            PullResult::Kept if o.decision.failure.is_some() => ("kept", o.decision.reason.clone()),
            PullResult::Kept => ("kept", digest(&o.decision.digest)),
            PullResult::Pulled {
                digest: d,
                updated,
                from,
            } => (
                if *updated { "pulled" } else { "up to date" },
                format!(
                    "{} from {from} ({secs:.1}s{})",
                    digest(d),
                    if o.attempts > 1 {
                        format!(", {} attempts", o.attempts)
                    } else {
                        String::new()
                    },
                ),
            ),
            PullResult::Tagged { digest: d } => (
                "tagged",
                format!("{} (was: {})", short(d), o.decision.reason),
            ),
            PullResult::Failed { message, .. } if o.attempts > 1 => (
                "FAILED",
                format!("{message} (after {} attempts)", o.attempts),
            ),
            PullResult::Failed { message, .. } => ("FAILED", message.clone()),
            PullResult::Skipped => ("skipped", "(stopping)".into()),
            PullResult::Deferred { why } => ("deferred", format!("({why})")),
        };
        let head = format!("{word:<10}  {name:<width$}  ");
        if head.len() + detail.len() <= columns {
            out.push_str(format!("{head}{detail}").trim_end());
            out.push('\n');
        } else {
            // The detail on its own lines, under the name, within the terminal.
            let _ = writeln!(out, "{word:<10}  {name}");
            let indent = " ".repeat(12);
            let options = unbroken(columns.max(40))
                .initial_indent(&indent)
                .subsequent_indent(&indent);
            for line in textwrap::wrap(&detail, options) {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    let s = Summary::of(outcomes);
    let _ = writeln!(
        out,
        "{}: {} pulled, {} up to date, {} tagged, {} kept, {} failed{}",
        count(outcomes.len(), "image", "images"),
        s.pulled,
        s.up_to_date,
        s.tagged,
        s.kept,
        s.failed,
        if s.skipped > 0 {
            format!(", {} skipped", s.skipped)
        } else {
            String::new()
        }
    );
    out
}

/// The `pull --json` document.
pub(super) fn pull_json(config: &Path, outcomes: &[Outcome]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        #[serde(serialize_with = "lossy_path")]
        config: &'a Path,
        images: &'a [Outcome],
        summary: Summary,
    }
    let doc = Doc {
        version: JSON_VERSION,
        config,
        images: outcomes,
        summary: Summary::of(outcomes),
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

/// One `status` row: the plan's view plus what the registry says now.
#[derive(Debug, Clone)]
pub(super) struct StatusRow {
    /// The plan's decision for the image (pin, presence, local digest, drift).
    pub decision: Decision,
    /// The digest the tag has in the registry now, when it was asked and answered.
    pub registry_digest: Option<String>,
    /// Why the registry's digest is unknown, when it was asked and did not answer.
    pub registry_error: Option<String>,
    /// The class of that failure (auth, not-found, network, engine).
    pub registry_error_class: Option<crate::model::failure::FailureClass>,
    /// Whether the registry has the pinned digest, when a pull needs it and the tag's digest
    /// is another (asked with one HEAD): false means the next run cannot pull it.
    pub registry_has_pinned: Option<bool>,
    /// The decision's digest is the registry's answer now, not a pin: a followed tag, or a
    /// first-pull image not pinned yet (its first pull pins it).
    pub resolved_now: bool,
}

/// A status entry: the plan's, and `registry` when it was asked (its digest for the tag now,
/// or why it did not answer).
impl Serialize for StatusRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Failed<'a> {
            class: Option<FailureClass>,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Registry<'a> {
            digest: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            failure: Option<Failed<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            has_pinned: Option<bool>,
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            decision: &'a Decision,
            #[serde(skip_serializing_if = "Option::is_none")]
            registry: Option<Registry<'a>>,
        }
        let failure = self.registry_error.as_deref().map(|message| Failed {
            class: self.registry_error_class,
            message,
        });
        let registry = (self.registry_digest.is_some() || failure.is_some()).then_some(Registry {
            digest: self.registry_digest.as_deref(),
            failure,
            has_pinned: self.registry_has_pinned,
        });
        Entry {
            decision: &self.decision,
            registry,
        }
        .serialize(serializer)
    }
}

impl StatusRow {
    /// The pinned digest: what the config, the lock or the first pull fixed. None when the
    /// image follows its tag, or is not pinned yet.
    pub(super) fn pinned(&self) -> Option<&str> {
        match self.decision.pinned.mode {
            PinMode::Follow => None,
            _ if self.resolved_now => None,
            _ => self.decision.digest.as_deref(),
        }
    }
}

/// What a missing image needs before the next run can pull it, by what the registry said.
fn missing_note(registry: Option<FailureClass>) -> &'static str {
    match registry {
        None => "missing; the next run pulls it",
        Some(FailureClass::Auth) => {
            "missing; the registry refused access: the next run needs a working login (docker \
             login as the user stowage runs as, or pull.credentials)"
        }
        Some(FailureClass::NotFound) => {
            "missing; the registry has no such image: check its name and tag"
        }
        Some(FailureClass::Network) => {
            "missing; the registry does not answer: the next run pulls it once it does"
        }
        Some(FailureClass::RateLimited) => {
            "missing; the registry's rate limit is spent: the next run pulls it when it resets"
        }
        Some(FailureClass::Engine) => {
            "missing; the engine failed: the next run pulls it once the engine answers"
        }
        Some(FailureClass::Signature) => {
            "missing; its digest is not signed as required: it is never pulled"
        }
    }
}

/// The REGISTRY column when the registry could not say the tag's digest: what it did.
fn registry_word(class: Option<FailureClass>) -> &'static str {
    match class {
        Some(FailureClass::Auth) => "refused",
        Some(FailureClass::NotFound) => "no such tag",
        Some(FailureClass::Network) => "no answer",
        Some(FailureClass::RateLimited) => "rate limited",
        Some(FailureClass::Signature) => "unsigned",
        Some(FailureClass::Engine) | None => "error",
    }
}

/// What a present image's registry failure means for it: its refreshes (and, for a follow
/// image, its updates) fail until it is fixed. `None` for a failure that passes by itself.
fn present_note(class: Option<FailureClass>) -> Option<&'static str> {
    match class? {
        FailureClass::Auth => Some(
            "present; the registry refused access: refreshes fail until the login works \
             (docker login as the user stowage runs as, or pull.credentials)",
        ),
        FailureClass::NotFound => Some(
            "present; the registry no longer has this tag: refreshes fail until the name is \
             fixed",
        ),
        _ => None,
    }
}

/// Whether a registry failure is one `status --exit-code` fails for: it does not pass by
/// itself (a wrong login, a name the registry does not have): those [`present_note`] warns of.
pub(super) fn needs_fixing(class: Option<FailureClass>) -> bool {
    present_note(class).is_some()
}

/// The `status` table.
pub(super) fn status_text(rows: &[StatusRow]) -> String {
    if rows.is_empty() {
        return "no images are required by the configuration\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let d = &r.decision;
            let registry = match (&r.registry_digest, &r.registry_error) {
                (Some(g), _) => short(g),
                (None, Some(_)) => registry_word(r.registry_error_class).to_owned(),
                (None, None) => "-".into(),
            };
            let gone = match (r.registry_has_pinned, &d.digest) {
                (Some(false), Some(digest)) => d.pinned.digest_gone(digest),
                _ => None,
            };
            let note = if let Some(gone) = gone {
                let state = if d.drift { "DRIFT" } else { presence(d.state) };
                format!("{state}; {gone}")
            } else if d.drift {
                "DRIFT: the name points at other content than the pinned digest (a new pin, or \
                 re-tagged); the next run pulls the pinned one"
                    .to_owned()
            } else if let Some(c) = &d.cooldown {
                format!(
                    "the tag moved to {}; adopted from {} (min_digest_age), the present image \
                     stays until then",
                    short(&c.digest),
                    c.eligible_at_words()
                )
            } else if let Some(Check::Refused { finding }) = &d.signature {
                format!("REFUSED: the tag's digest is not signed as required ({finding})")
            } else if d.state == Presence::Missing {
                match (r.registry_error_class, &r.registry_error) {
                    // What the registry said is the cause worth knowing (a name that does not
                    // resolve is not a registry that is down).
                    (Some(FailureClass::Network), Some(error)) => {
                        format!("{} ({error})", missing_note(r.registry_error_class))
                    }
                    _ => missing_note(r.registry_error_class).to_owned(),
                }
            } else if let Some(note) = present_note(r.registry_error_class) {
                note.to_owned()
            } else if let (Some(g), Some(l)) = (&r.registry_digest, &d.local_digest)
                && g != l
            {
                match d.pinned.mode {
                    PinMode::Follow => "the tag moved; the next run pulls it".to_owned(),
                    _ => "the tag moved in the registry; the pin holds".to_owned(),
                }
            } else {
                match &d.signature {
                    Some(Check::Verified { signer, .. }) => {
                        format!("ok, signed by {}", signer.words())
                    }
                    Some(Check::Warned { finding }) => format!("ok, not signed ({finding})"),
                    _ => "ok".to_owned(),
                }
            };
            vec![
                display_name(d),
                d.pinned.mode.as_str().to_owned(),
                presence(d.state).to_owned(),
                r.pinned().map(short).unwrap_or_else(|| "-".into()),
                d.local_digest
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "-".into()),
                registry,
                note,
            ]
        })
        .collect();
    table(
        &[
            "IMAGE", "PIN", "STATE", "PINNED", "LOCAL", "REGISTRY", "NOTE",
        ],
        &cells,
    )
}

/// The `status --json` document.
pub(super) fn status_json(config: &Path, rows: &[StatusRow], windows: &Windows) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        #[serde(serialize_with = "lossy_path")]
        config: &'a Path,
        images: &'a [StatusRow],
        #[serde(skip_serializing_if = "Windows::is_empty")]
        windows: &'a Windows,
    }
    let doc = Doc {
        version: JSON_VERSION,
        config,
        windows,
        images: rows,
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

/// Bytes in a human unit (`12.3 MB`): decimal, as `docker images` shows sizes and as the
/// config's `max_store_size = "10GB"` reads them.
pub(super) fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().si().to_string()
}

/// How long ago, in its two largest units (`3d 4h ago`, `55m ago`, `just now`): humantime's
/// whole form (`3days 4h 12m ago`) does not fit a column.
fn age(now: i64, then: i64) -> String {
    let secs = now.saturating_sub(then).max(0);
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "just now".to_owned(),
        (0, 0, m) => format!("{m}m ago"),
        (0, h, 0) => format!("{h}h ago"),
        (0, h, m) => format!("{h}h {m}m ago"),
        (d, 0, _) => format!("{d}d ago"),
        (d, h, _) => format!("{d}d {h}h ago"),
    }
}

/// The prune side of a plan, and the results of the removals when there were any.
/// `done`: the removals of a cycle that ran, `None` for a dry run or a plan.
pub(super) fn prune_text(plan: &PrunePlan, done: Option<&[Removal]>, now: i64) -> String {
    let removals = done.unwrap_or_default();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in &plan.remove {
        let (action, how) = removals
            .iter()
            .find(|r| r.candidate.id == c.id)
            .map_or(("remove", None), removal_result);
        let rule = c.rule.words().to_owned();
        let first = vec![
            action.to_owned(),
            short(&c.id),
            String::new(),
            bytes(c.size),
            last_used(now, c.last_used, c.last_used_from),
            match how {
                Some(how) => format!("{rule}; {how}"),
                None => rule,
            },
        ];
        push_named(&mut rows, first, &c.names);
    }
    for k in &plan.keep {
        let why = format!("kept: {}", k.protection.words());
        let first = vec![
            "keep".into(),
            short(&k.id),
            String::new(),
            bytes(k.size),
            String::new(),
            why,
        ];
        push_named(&mut rows, first, &k.names);
    }
    let mut out = if rows.is_empty() {
        "the image store is empty\n".to_owned()
    } else {
        table(
            &["ACTION", "ID", "IMAGE", "SIZE", "LAST USED", "WHY"],
            &rows,
        )
    };
    let later = if plan.deferred > 0 {
        format!(", {} left for later cycles (max_removals)", plan.deferred)
    } else {
        String::new()
    };
    let _ = match done {
        None => writeln!(
            out,
            "\n{} to remove ({} expected to be freed), {} kept{later}",
            plan.remove.len(),
            bytes(plan.bytes_expected),
            plan.keep.len(),
        ),
        Some(removals) => writeln!(out, "\n{}{later}", done_summary(removals, plan.keep.len())),
    };
    out.push_str(&space_notes(plan));
    out.push_str(&watching_notes(plan, now, done.is_some()));
    out.push_str(&removal_notes(removals));
    out
}

/// The containers a cycle found using images earlier cycles removed, under its table: each
/// such image was pulled back, or is lost (the line says why).
pub(super) fn late_race_notes(late_races: &[LateRace]) -> String {
    let mut out = String::new();
    for r in late_races {
        let names = names_in_brackets(&r.names);
        let outcome = match &r.outcome {
            Race::Healed => "pulled back".to_owned(),
            Race::Lost { error } => format!("LOST, it could not be pulled back: {error}"),
        };
        let _ = writeln!(
            out,
            "{}{names}: removed by an earlier prune, and a container was created from it as it \
             went: {outcome}",
            short(&r.id)
        );
    }
    out
}

/// An image's names after its ID in a note: " (a, b)", or nothing when it had none.
fn names_in_brackets(names: &[String]) -> String {
    match names {
        [] => String::new(),
        names => format!(" ({})", names.join(", ")),
    }
}

/// The images containers use that earlier prunes removed and could not put back, tried again
/// by this cycle and still missing: said at every run while so.
pub(super) fn still_lost_notes(still_lost: &[LostImage]) -> String {
    let mut out = String::new();
    for l in still_lost {
        let names = names_in_brackets(&l.names);
        let _ = writeln!(
            out,
            "{}{names}: STILL MISSING, removed by an earlier prune as a container was created \
             from it, and still not put back (tried again at every prune)",
            short(&l.id)
        );
    }
    out
}

/// What the space rules measured, under the table, when one of them selects an image: the
/// figures a removal by `high_watermark` or `max_store_size` is judged by.
fn space_notes(plan: &PrunePlan) -> String {
    let Some(space) = plan.space else {
        return String::new();
    };
    let chose = |rule| plan.remove.iter().any(|c| c.rule == rule);
    let mut notes = String::new();
    if chose(Rule::DiskWatermark)
        && let (Some(used), Some(high)) = (space.disk_used_percent, space.high_watermark)
    {
        notes.push_str(&paragraph(&format!(
            "the disk is {used:.1}% used, above high_watermark ({high}%): the least recently \
             used go until it is under low_watermark ({}%)",
            space.low_watermark.unwrap_or(high)
        )));
    }
    if chose(Rule::StoreSize)
        && let Some(cap) = space.max_store_size
    {
        notes.push_str(&paragraph(&format!(
            "the store holds {} of images, above max_store_size ({}): the least recently \
             used go until it is under",
            bytes(space.store_bytes),
            bytes(cap)
        )));
    }
    notes
}

/// What a cycle that ran did: `2 removed (1.2 GB of images), 1 failed, 5 kept`. A removal
/// skipped because the store changed is kept, as its row says.
fn done_summary(removals: &[Removal], kept: usize) -> String {
    let count = |result| removals.iter().filter(|r| r.result == result).count();
    let freed: u64 = removals
        .iter()
        .filter(|r| r.result == RemovalResult::Removed)
        .map(|r| r.candidate.size)
        .sum();
    let failed = match count(RemovalResult::Failed) {
        0 => String::new(),
        n => format!(", {n} failed"),
    };
    format!(
        "{} removed ({} of images){failed}, {} kept",
        count(RemovalResult::Removed),
        bytes(freed),
        kept + count(RemovalResult::Skipped)
    )
}

/// An image's row, its first name in the IMAGE column and each further name on a row of its
/// own under it: an image with several names is not shown by one of them.
fn push_named(rows: &mut Vec<Vec<String>>, mut first: Vec<String>, names: &[String]) {
    const IMAGE: usize = 2;
    first[IMAGE] = names.first().cloned().unwrap_or_else(|| "<none>".into());
    let width = first.len();
    rows.push(first);
    for name in names.iter().skip(1) {
        let mut row = vec![String::new(); width];
        row[IMAGE] = name.clone();
        rows.push(row);
    }
}

/// How a planned removal ended: a word for the ACTION column (`kept` for a removal the store
/// changed under, as the plan's keeps say), and what happened, for WHY.
fn removal_result(r: &Removal) -> (&'static str, Option<String>) {
    match (&r.error, &r.race) {
        (_, Some(Race::Healed)) => (
            "removed",
            Some("a container was created from it meanwhile: pulled back".to_owned()),
        ),
        (_, Some(Race::Lost { error })) => (
            "removed",
            Some(format!(
                "a container was created from it meanwhile, and it could not be pulled back: \
                 {error}"
            )),
        ),
        (Some(e), None) => match e.strip_prefix("kept: ") {
            Some(why) => ("kept", Some(why.to_owned())),
            None => (r.result.as_str(), Some(e.clone())),
        },
        (None, None) => (r.result.as_str(), None),
    }
}

/// LAST USED, saying what the time is when it is not a use.
fn last_used(now: i64, then: i64, from: UseSource) -> String {
    match from {
        UseSource::Use => age(now, then),
        UseSource::Arrival => format!("arrived {}", age(now, then)),
        UseSource::Build => format!("built {}", age(now, then)),
        UseSource::Watching => format!("none since {}", age(now, then)),
    }
}

/// What the plan cannot know yet, said under the table: since when stowage has watched the
/// store, when that is recent enough to keep images as too young or to leave their last use
/// unknown.
/// `ran`: the cycle ran (and recorded what it saw), rather than a dry run or a plan.
fn watching_notes(plan: &PrunePlan, now: i64, ran: bool) -> String {
    let mut notes = Vec::new();
    let since = chrono::DateTime::from_timestamp(plan.watching_since, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let young = plan
        .keep
        .iter()
        .any(|k| k.protection == Protection::TooYoung);
    let min_age = humantime::format_duration(std::time::Duration::from_secs(
        u64::try_from(plan.min_age).unwrap_or(0),
    ));
    if young && !ran && now - plan.watching_since < 60 {
        // Nothing recorded yet: a dry run saves nothing, and neither does a daemon without
        // [prune], so "since now" would be said again at the next look.
        notes.push(format!(
            "stowage has no record of this store yet: every image counts as first seen now, \
             and is kept as younger than min_age ({min_age}). The watch starts when the \
             daemon runs with [prune], or at the first `stowage prune`; a dry run records \
             nothing"
        ));
    } else if young && now - plan.watching_since < plan.min_age {
        notes.push(format!(
            "stowage started watching this store {} ({since}): it keeps every image it has \
             seen for less than min_age ({min_age}); from {} on, min_age keeps only what arrived since",
            age(now, plan.watching_since),
            chrono::DateTime::from_timestamp(plan.watching_since + plan.min_age, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default()
        ));
    }
    if plan
        .remove
        .iter()
        .any(|c| c.last_used_from == UseSource::Build)
    {
        notes.push(format!(
            "\"built\": no use seen since stowage started watching ({since}); the build time \
             stands in for the last use, so the oldest go first"
        ));
    }
    let width = width();
    notes
        .iter()
        .map(|n| textwrap::fill(n, unbroken(width)) + "\n")
        .collect()
}

/// What happened to names beyond the table: tags left alone because they had moved, and,
/// loudly, anything the engine removed that the plan did not name.
fn removal_notes(removals: &[Removal]) -> String {
    let mut out = String::new();
    for r in removals {
        let id = short(&r.candidate.id);
        for tag in &r.moved {
            let _ = writeln!(
                out,
                "{id}: {tag} left alone: it no longer named this image when its turn came"
            );
        }
        for a in &r.against_plan {
            let what = match &a.taken.image {
                Some(image) => format!("image {}", short(image)),
                None if a.taken.another => {
                    "names of another image (a tag moved onto it just before its removal)".into()
                }
                None => format!("names of {id}"),
            };
            let names = a.taken.names.join(", ");
            let outcome = match &a.outcome {
                Race::Healed => "put back".to_owned(),
                Race::Lost { error } => format!("LOST, it could not be put back: {error}"),
            };
            let _ = writeln!(
                out,
                "{id}: the engine removed {what} ({names}), which the plan did not name: {outcome}"
            );
        }
    }
    out
}

/// The prune plan and results as JSON.
/// The `prune --json` document.
pub(super) fn prune_doc(config: &Path, dry_run: bool, cycle: &Cycle) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        #[serde(serialize_with = "lossy_path")]
        config: &'a Path,
        dry_run: bool,
        prune: serde_json::Value,
    }
    let mut prune = prune_json(&cycle.plan, Some(&cycle.removals));
    prune["late_races"] = serde_json::json!(cycle.late_races);
    prune["still_lost"] = serde_json::json!(cycle.still_lost);
    let doc = Doc {
        version: JSON_VERSION,
        config,
        dry_run,
        prune,
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

/// A prune plan as JSON and, after a cycle (a dry one included), how each removal ended.
pub(super) fn prune_json(plan: &PrunePlan, removals: Option<&[Removal]>) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "remove": plan.remove,
        "keep": plan.keep,
        "bytes_expected": plan.bytes_expected,
        "deferred": plan.deferred,
        "watching_since": plan.watching_since,
        "min_age": plan.min_age,
    });
    if let Some(space) = plan.space {
        doc["space"] = serde_json::json!(space);
    }
    if let Some(removals) = removals {
        doc["results"] = serde_json::json!(removals);
    }
    doc
}

/// What `pin` says about the changes it made or found.
pub(super) fn lock_changes_text(lock: &Path, changes: &[LockChange], check: bool) -> String {
    let mut out = String::new();
    if changes.is_empty() {
        let _ = writeln!(out, "{}: up to date", lock.display());
        return out;
    }
    for c in changes {
        let _ = writeln!(out, "{c}");
    }
    let _ = writeln!(
        out,
        "{}: {}{}",
        lock.display(),
        count(changes.len(), "change", "changes"),
        if check {
            " (stale; run `stowage pin` to update it)"
        } else {
            " written"
        }
    );
    out
}

/// A path as JSON text. serde's own refuses a path that is not UTF-8, and the whole document
/// would be lost to one odd byte in a file name: shown as the OS would, lossily.
fn lossy_path<S: serde::Serializer>(path: &&Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&path.display())
}

/// `n` with its noun, singular or plural: "1 image", "2 images".
pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

mod files;
pub(super) use files::{PinFailure, PinResult, check_json, pin_json};

#[cfg(test)]
mod tests;

//! The file's shape: its TOML syntax, its keys and the types of its values, every problem
//! reported in one run. serde stops at the first unknown key or wrongly typed value, so an
//! operator fixing a file one message at a time would need a run for each; here each one found
//! is recorded and taken out of the document, and the rest is read again, until it reads.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

use super::raw::RawConfig;

/// At most this many shape problems are reported for one file (each one found costs a read
/// of the rest); more are left for the next run.
const MOST: usize = 100;

/// One shape problem: where, and what, in the operator's words.
pub(super) struct Misfit {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

/// The file as the raw config types read it, with every shape problem found on the way.
/// `None` when nothing could be read past them (a syntax error, or more than [`MOST`]).
pub(super) fn read(text: &str) -> (Option<RawConfig>, Vec<Misfit>) {
    let (mut doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let misfits = syntax
            .iter()
            .map(|e| Misfit {
                span: e.span().unwrap_or(0..0),
                message: syntax_in_words(e.message().trim_end()),
            })
            .collect();
        return (None, misfits);
    }
    let mut misfits = Vec::new();
    // What was taken out, by path: a missing key it leaves is not another problem.
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MOST {
        let error = match RawConfig::deserialize(Deserializer::from(doc.clone())) {
            Ok(raw) => return (Some(raw), misfits),
            Err(e) => e,
        };
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim_end().to_owned();
        let Some(path) = take_out(doc.get_mut(), &span, "") else {
            misfits.push(Misfit { span, message });
            return (None, misfits);
        };
        let missing = missing_field(&message).map(|f| join(&path, f));
        if !missing.is_some_and(|m| removed.contains(&m)) {
            misfits.push(Misfit {
                span,
                message: in_words(&path, &message),
            });
        }
        removed.push(path);
    }
    (None, misfits)
}

/// A TOML syntax error in an operator's words where the parser's are its grammar's: a bare
/// value (`file = /var/lib/x`) reads "string values must be quoted, expected literal string".
fn syntax_in_words(message: &str) -> String {
    match message.strip_suffix(", expected literal string") {
        Some(quoted) if quoted.starts_with("string values must be quoted") => {
            format!("{quoted}: write key = \"value\"")
        }
        _ => message.to_owned(),
    }
}

/// Takes the entry of `table` (under `path`) that `span` is exactly the key or value of out of
/// it: the key or value the error is about, or the table a key is missing from (a table's span
/// is its header). Returns its path (`pull.schedule`, `image.name`), or `None` when nothing
/// is at `span`.
fn take_out(table: &mut DeTable<'_>, span: &Range<usize>, path: &str) -> Option<String> {
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        // The innermost first: an array of tables has the span of its first table's header.
        let inner = join(path, key.get_ref());
        if let Some(found) = take_out_of(value, span, &inner) {
            return Some(found);
        }
        if key.span() == *span || value.span() == *span {
            hit = Some(key.get_ref().to_string());
            break;
        }
    }
    let key = hit?;
    table.remove(key.as_str());
    Some(join(path, &key))
}

/// [`take_out`] within a value: a table, or the elements of an array.
fn take_out_of(
    value: &mut Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &str,
) -> Option<String> {
    match value.get_mut() {
        DeValue::Table(t) => take_out(t, span, path),
        DeValue::Array(items) => {
            for item in items.as_mut().iter_mut() {
                if let Some(found) = take_out_of(item, span, path) {
                    return Some(found);
                }
            }
            let i = items.iter().position(|item| item.span() == *span)?;
            // The element itself is at fault (a key missing from it): the others are read on.
            let all = std::mem::replace(items, std::iter::empty().collect());
            *items = all
                .into_iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| v)
                .collect();
            Some(path.to_owned())
        }
        _ => None,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The field a "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde's message about the entry at `path`, in the operator's words: an unknown key with
/// the nearest known one; a wrong type with the key, what was found and what is accepted.
fn in_words(path: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, known) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
        return unknown_key(path, key, &known);
    }
    if let Some(key) = missing_field(message) {
        return format!("{path}: the key \"{key}\" is missing");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!(
            "{path}: expected {}, found {}",
            type_in_words(expected),
            found_in_words(found)
        );
    }
    format!("{path}: {message}")
}

/// An unknown key at `path` (its last part is the key), with the known key it most likely
/// means, or the known keys when none is near.
fn unknown_key(path: &str, key: &str, known: &[&str]) -> String {
    let table = path.rsplit_once('.').map(|(t, _)| t);
    let place = table.map_or_else(|| "at the top level".to_owned(), |t| format!("in [{t}]"));
    let near = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2) || k.ends_with(&format!("_{key}")))
        .min();
    match near {
        Some((_, k)) => format!("unknown key \"{key}\" {place}: did you mean \"{k}\"?"),
        None if known.is_empty() => format!("unknown key \"{key}\" {place}"),
        None => format!(
            "unknown key \"{key}\" {place} (known keys: {})",
            known.join(", ")
        ),
    }
}

/// What serde says it expected, as a TOML type.
fn type_in_words(expected: &str) -> String {
    let integer = [
        "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize",
    ];
    if integer.contains(&expected) || expected.contains("integer") {
        "an integer (no quotes)".into()
    } else if expected == "a boolean" {
        "true or false (no quotes)".into()
    } else if expected.contains("sequence") {
        "an array ([...])".into()
    } else if expected.starts_with("struct ") || expected.contains("map") {
        "a table".into()
    } else if expected == "a string" {
        "a string (in quotes)".into()
    } else {
        expected.to_owned()
    }
}

/// What serde says it found, as a TOML value.
fn found_in_words(found: &str) -> String {
    let quoted = |s: &str| s.trim_matches('`').to_owned();
    if let Some(s) = found.strip_prefix("string ") {
        format!("the string {s}")
    } else if let Some(n) = found.strip_prefix("integer ") {
        format!("the integer {}", quoted(n))
    } else if let Some(n) = found.strip_prefix("floating point ") {
        format!("the number {}", quoted(n))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        quoted(b)
    } else if found == "sequence" {
        "an array".into()
    } else if found == "map" {
        "a table".into()
    } else {
        found.to_owned()
    }
}

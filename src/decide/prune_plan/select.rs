//! Phase two: which unprotected images the rules select, and by which rule. The age rules
//! first, then the space rules, least recently used first, only as far as needed.

use std::collections::HashMap;

use super::{ById, Protection, PruneInput, Rule, first_seen, last_use};
use crate::model::image::StoreImage;
use crate::policy::keep::Limits;

/// Every selected image, by ID, with the rule that selects it.
pub(super) fn select<'a>(
    input: &'a PruneInput,
    limits: &Limits,
    protection: &HashMap<&str, Protection>,
    by_id: &ById<'a>,
) -> HashMap<&'a str, Rule> {
    let mut selected = by_age(input, limits, protection);
    by_space(input, limits, protection, by_id, &mut selected);
    selected
}

/// Dangling images older than `dangling_min_age`, and tagged ones unused for `unused_max_age`.
fn by_age<'a>(
    input: &'a PruneInput,
    limits: &Limits,
    protection: &HashMap<&str, Protection>,
) -> HashMap<&'a str, Rule> {
    let mut selected = HashMap::new();
    let watched = input.now - input.usage.watching_since;
    for image in &input.images {
        if protection.contains_key(image.id.as_str()) {
            continue;
        }
        let first_seen = first_seen(image, input);
        if image.tags.is_empty() {
            if let Some(age) = limits.dangling_min_age
                && input.now - first_seen >= age
            {
                selected.insert(image.id.as_str(), Rule::Dangling);
            }
        } else if let Some(max_age) = limits.unused_max_age
            // A max age applies only after stowage has watched that long: a lost state file
            // must not turn every image into an old one.
            && watched >= max_age
            && input.now - last_use(image, &input.usage).0 >= max_age
        {
            selected.insert(image.id.as_str(), Rule::UnusedMaxAge);
        }
    }
    selected
}

/// The space rules: least recently used first, until under the low watermark and the cap.
fn by_space<'a>(
    input: &'a PruneInput,
    limits: &Limits,
    protection: &HashMap<&str, Protection>,
    by_id: &ById<'a>,
    selected: &mut HashMap<&'a str, Rule>,
) {
    let store_size: u64 = input.images.iter().map(|i| i.size).sum();
    let mut freed: u64 = selected
        .keys()
        .filter_map(|id| by_id.get(id))
        .map(|i| i.size)
        .sum();
    let over = |freed: u64| space_rule(input, limits, store_size, freed);
    if over(freed).is_none() {
        return;
    }
    let mut lru: Vec<&StoreImage> = input
        .images
        .iter()
        .filter(|i| {
            !protection.contains_key(i.id.as_str()) && !selected.contains_key(i.id.as_str())
        })
        .collect();
    lru.sort_by(|a, b| {
        last_use(a, &input.usage)
            .0
            .cmp(&last_use(b, &input.usage).0)
            .then(a.id.cmp(&b.id))
    });
    for image in lru {
        let Some(rule) = over(freed) else { break };
        selected.insert(image.id.as_str(), rule);
        freed += image.size;
    }
}

/// The space rule still broken once `freed` bytes are gone, if any.
fn space_rule(input: &PruneInput, limits: &Limits, store_size: u64, freed: u64) -> Option<Rule> {
    if let (Some(disk), Some(high), Some(low)) =
        (input.disk, limits.high_watermark, limits.low_watermark)
        && disk.total > 0
    {
        let used_pct = |used: u64| used as f64 * 100.0 / disk.total as f64;
        // Triggered above the high mark; once triggered, goes on down to the low mark.
        if used_pct(disk.used) > high && used_pct(disk.used.saturating_sub(freed)) > low {
            return Some(Rule::DiskWatermark);
        }
    }
    if let Some(cap) = limits.max_store_size
        && store_size.saturating_sub(freed) > cap
    {
        return Some(Rule::StoreSize);
    }
    None
}

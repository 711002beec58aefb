//! Platforms (`os/arch[/variant]`) and multi-platform indexes: which manifest of an index a
//! host runs.

use std::collections::BTreeMap;

/// What is known about indexes: each index digest's platform-to-manifest-digest map. Indexes
/// never change, so entries are kept for good (in the state file and the lock).
pub(crate) type IndexCache = BTreeMap<String, BTreeMap<String, String>>;

/// The platforms of a manifest body: `os/arch[/variant]` to digest for an index, empty for a
/// single manifest.
pub(crate) fn index_platforms(body: &[u8]) -> Result<BTreeMap<String, String>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        manifests: Option<Vec<Entry>>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        digest: String,
        platform: Option<Platform>,
    }
    #[derive(serde::Deserialize)]
    struct Platform {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    let doc: Doc = serde_json::from_slice(body)?;
    let mut out = BTreeMap::new();
    for e in doc.manifests.unwrap_or_default() {
        // Entries without a platform (attestations, for one) are not images to run.
        let Some(p) = e.platform else { continue };
        if p.os == "unknown" {
            continue;
        }
        let key = match p.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
            _ => format!("{}/{}", p.os, p.architecture),
        };
        out.entry(key).or_insert(e.digest);
    }
    Ok(out)
}

/// The digest for `want` among an index's platforms: an exact match, or, when `want` names no
/// variant, the first entry of that os/arch (`linux/arm64` takes `linux/arm64/v8`).
pub(crate) fn choose_platform(platforms: &BTreeMap<String, String>, want: &str) -> Option<String> {
    if let Some(d) = platforms.get(want) {
        return Some(d.clone());
    }
    if want.matches('/').count() == 1 {
        let prefix = format!("{want}/");
        return platforms
            .iter()
            .find(|(k, _)| k.starts_with(&prefix))
            .map(|(_, d)| d.clone());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_platforms_and_choice() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:a","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:b","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:c","platform":{"os":"unknown","architecture":"unknown"}},
            {"digest":"sha256:d"}]}"#;
        let p = index_platforms(body).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            choose_platform(&p, "linux/amd64").as_deref(),
            Some("sha256:a")
        );
        assert_eq!(
            choose_platform(&p, "linux/arm64").as_deref(),
            Some("sha256:b")
        );
        assert_eq!(
            choose_platform(&p, "linux/arm64/v8").as_deref(),
            Some("sha256:b")
        );
        assert_eq!(choose_platform(&p, "linux/arm64/v7"), None);
        assert_eq!(choose_platform(&p, "linux/s390x"), None);
        let single = br#"{"schemaVersion":2,"config":{"digest":"sha256:x"},"layers":[]}"#;
        assert!(index_platforms(single).unwrap().is_empty());
        assert!(index_platforms(b"not json").is_err());
    }
}

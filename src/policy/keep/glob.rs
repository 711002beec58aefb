//! Keep globs, read like image names: `alpine` means `docker.io/library/alpine` with any tag,
//! `someorg/**` means `docker.io/someorg/**`. A glob that can never match a fully qualified
//! name is refused with why and what to write instead.
//!
//! The glob is split as a reference is, `name[:tag][@digest]`, and its name is normalised by
//! the reference grammar's rule: a first segment before a `/` names a registry when it has a
//! `.` or a `:` or is `localhost`; otherwise the name is on Docker Hub, under `library/` when
//! it is one segment. A first segment of wildcards alone (`*/team/**`, `**/app:*`) stands for
//! any registry and stays as written.

use crate::model::reference::DOCKER_HUB;

/// A `*` or `?` within a registry host: anything but a path separator or a digest's `@`.
const HOST_CHAR: &str = "[^/@]";
/// A `*` or `?` within a repository path segment or a tag: not across `/`, `:` or `@`.
const NAME_CHAR: &str = "[^/:@]";
/// A `*` or `?` within a digest (`sha256:...`, or `*` for any).
const DIGEST_CHAR: &str = "[^/@]";

/// The regular expression (anchored) of a glob over fully qualified names, or why it can
/// never match one.
pub(super) fn glob_regex(glob: &str) -> Result<String, String> {
    if glob.is_empty() {
        return Err(
            "an empty pattern matches no image: write a name such as \"nginx\" (any \
                    tag) or \"registry.example.com/team/**\", or remove it"
                .into(),
        );
    }
    if glob.trim() != glob {
        return Err(format!(
            "image names have no leading or trailing whitespace: write \"{}\"",
            glob.trim()
        ));
    }
    let parts = Parts::split(glob);
    let first = parts.first();
    parts.check(first)?;
    let name = parts.normalised_name(first);
    let mut re = String::from("^");
    // Before the first `/`: the registry (or a `**` reaching past it).
    let (host, path) = match name.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (name.as_str(), None),
    };
    push_glob(&mut re, host, HOST_CHAR);
    if let Some(path) = path {
        re.push('/');
        push_glob(&mut re, path, NAME_CHAR);
    }
    match (parts.tag, parts.digest) {
        // Any tag and any digest of the repository; a trailing `**` reaches them already.
        (None, None) if !name.ends_with("**") => re.push_str("(?:[:@][^/]*)?"),
        (None, None) => {}
        (Some(tag), None) => {
            re.push(':');
            push_glob(&mut re, tag, NAME_CHAR);
        }
        (tag, Some(digest)) => {
            // The digest names the content, as in a pull: the engine lists it without a tag.
            if let Some(tag) = tag {
                re.push_str("(?::");
                push_glob(&mut re, tag, NAME_CHAR);
                re.push_str(")?");
            }
            re.push('@');
            push_glob(&mut re, digest, DIGEST_CHAR);
        }
    }
    re.push('$');
    Ok(re)
}

/// A glob's name without its tag and digest, when it has either: `nginx:1` is `Some("nginx")`.
pub(super) fn without_tag_or_digest(glob: &str) -> Option<&str> {
    let parts = Parts::split(glob);
    (parts.tag.is_some() || parts.digest.is_some()).then_some(parts.name)
}

/// Appends `glob` as a regular expression: `**` anything, `*` a run of `one`, `?` one `one`.
fn push_glob(re: &mut String, glob: &str, one: &str) {
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                re.push_str(".*");
            }
            '*' => {
                re.push_str(one);
                re.push('*');
            }
            '?' => re.push_str(one),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
}

/// What the first segment of a glob's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// A registry host (`registry.example.com`, `127.0.0.1:*`, `localhost`).
    Host,
    /// Wildcards alone (`*`, `?`), before a `/`: any registry.
    AnyRegistry,
    /// Holds a `**`: it reaches across the registry and maybe further, as written.
    Spans,
    /// A Docker Hub repository's first segment (`alpine`, `someorg`).
    Hub,
}

/// A glob split as a reference is: `name[:tag][@digest]`.
struct Parts<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

fn wildcard(c: char) -> bool {
    c == '*' || c == '?'
}

impl<'a> Parts<'a> {
    fn split(glob: &'a str) -> Self {
        // Neither a name nor a tag holds an `@`: the first one starts the digest.
        let (rest, digest) = match glob.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (glob, None),
        };
        // A `:` after the last `/` starts the tag; one before it is a registry's port.
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        Parts { name, tag, digest }
    }

    fn first(&self) -> First {
        let (first, slash) = match self.name.split_once('/') {
            Some((first, _)) => (first, true),
            None => (self.name, false),
        };
        if first.contains("**") {
            First::Spans
        } else if slash && !first.is_empty() && first.chars().all(wildcard) {
            First::AnyRegistry
        } else if slash && (first.contains(['.', ':']) || first == "localhost") {
            First::Host
        } else {
            First::Hub
        }
    }

    /// The name as an image name is normalised: on Docker Hub unless a registry is named,
    /// under `library/` when that leaves one segment.
    fn normalised_name(&self, first: First) -> String {
        match first {
            First::Spans | First::AnyRegistry => self.name.to_owned(),
            First::Hub if self.name.contains('/') => format!("{DOCKER_HUB}/{}", self.name),
            First::Hub => format!("{DOCKER_HUB}/library/{}", self.name),
            First::Host => {
                let (host, path) = self.name.split_once('/').unwrap_or((self.name, ""));
                let host = if host == "index.docker.io" {
                    DOCKER_HUB
                } else {
                    host
                };
                if host == DOCKER_HUB && !path.contains('/') && !path.contains("**") {
                    format!("{DOCKER_HUB}/library/{path}")
                } else {
                    format!("{host}/{path}")
                }
            }
        }
    }

    /// The pattern as written with `name` in place of its name.
    fn with_name(&self, name: &str) -> String {
        let mut s = name.to_owned();
        if let Some(tag) = self.tag {
            s = format!("{s}:{tag}");
        }
        if let Some(digest) = self.digest {
            s = format!("{s}@{digest}");
        }
        s
    }

    /// The pattern as written with `digest` in place of its digest.
    fn with_digest(&self, digest: &str) -> String {
        match self.tag {
            Some(tag) => format!("{}:{tag}@{digest}", self.name),
            None => format!("{}@{digest}", self.name),
        }
    }

    /// Why the glob can never match a fully qualified name, if it cannot.
    fn check(&self, first: First) -> Result<(), String> {
        self.check_name(first)?;
        if let Some(tag) = self.tag {
            check_tag(tag).map_err(|why| {
                format!(
                    "the tag \"{tag}\" can never match: {why}: write \"{n}:*\" for any tag, or \
                     \"{n}\" for any tag or digest",
                    n = self.name
                )
            })?;
        }
        if let Some(digest) = self.digest {
            let lower = digest.to_ascii_lowercase();
            if lower != digest && check_digest(&lower).is_ok() {
                return Err(format!(
                    "the digest \"{digest}\" can never match: engines list digests in \
                     lowercase hex: write \"{}\"",
                    self.with_digest(&lower)
                ));
            }
            check_digest(digest).map_err(|why| {
                format!(
                    "the digest \"{digest}\" can never match: {why}: write \
                     \"{n}@sha256:\" and the 64 hex digits, or \"{n}\" for any tag or digest",
                    n = self.name
                )
            })?;
        }
        Ok(())
    }

    fn check_name(&self, first: First) -> Result<(), String> {
        if self.name.is_empty() {
            return Err(format!(
                "no repository before the tag or digest: write a name, such as \"{}\"",
                self.with_name("nginx")
            ));
        }
        if first == First::Hub && !self.name.contains('/') && self.name.chars().all(wildcard) {
            return Err(format!(
                "\"{}\" matches within one path segment, and every fully qualified name has \
                 at least two (docker.io/library/nginx): write \"**\" for every image, or \
                 \"docker.io/library/{}\" for Docker Hub's official images",
                self.name,
                self.with_name(self.name)
            ));
        }
        let segments: Vec<&str> = self.name.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            let mut fixed = segments
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            if self.name.ends_with('/') {
                fixed.push_str("/**");
            }
            return Err(format!(
                "an image name has no empty path segment (a \"/\" at its start or end, or \
                 \"//\"): write \"{}\"",
                self.with_name(&fixed)
            ));
        }
        let last = segments.len() - 1;
        for (i, segment) in segments.iter().enumerate() {
            let kind = match (i, first) {
                (0, First::Host) => Segment::Host,
                (0, First::Spans | First::AnyRegistry) => Segment::Anything,
                _ => Segment::Path,
            };
            // After a `**` in the last segment of a glob without tag or digest, what follows
            // may be in the tag.
            let loose_after = (i == last && self.tag.is_none() && self.digest.is_none())
                .then(|| segment.find("**"))
                .flatten();
            for (at, c) in segment.char_indices() {
                let kind = match loose_after {
                    Some(star) if at > star => Segment::Anything,
                    _ => kind,
                };
                self.check_char(c, kind)?;
            }
        }
        Ok(())
    }

    fn check_char(&self, c: char, kind: Segment) -> Result<(), String> {
        if wildcard(c) {
            return Ok(());
        }
        let (ok, what) = match kind {
            Segment::Host => (
                // `_` too: `a.b_c/x` is a reference, and its registry is `a.b_c`.
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'),
                "a registry host (letters, digits, `.`, `-` and `_`, and a `:port`)",
            ),
            Segment::Path => {
                if c.is_ascii_uppercase() {
                    return Err(format!(
                        "repository names are lowercase, so \"{c}\" never appears in one: \
                         write \"{}\"",
                        self.with_name(&self.lowercase_path())
                    ));
                }
                (
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'),
                    "a repository name (lowercase letters and digits, with `.`, `_` or `-` \
                     between them, segments joined by `/`)",
                )
            }
            Segment::Anything => (
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'),
                "an image name",
            ),
        };
        if ok {
            return Ok(());
        }
        let hint = if matches!(
            c,
            '[' | ']' | '{' | '}' | '(' | ')' | '|' | '+' | '\\' | '^' | '$'
        ) {
            "; globs have no classes or alternatives: use `*`, `**` or `?`, or a `regex:` pattern"
        } else {
            "; globs add `*`, `**` and `?`"
        };
        Err(format!("\"{c}\" never appears in {what}{hint}"))
    }

    /// The name with its repository part in lowercase (a registry host may have capitals).
    fn lowercase_path(&self) -> String {
        match (self.first(), self.name.split_once('/')) {
            (First::Host | First::Spans | First::AnyRegistry, Some((host, path))) => {
                format!("{host}/{}", path.to_ascii_lowercase())
            }
            _ => self.name.to_ascii_lowercase(),
        }
    }
}

/// Which characters a part of a name may hold.
#[derive(Debug, Clone, Copy)]
enum Segment {
    Host,
    Path,
    /// Reached by a `**`: host, path or tag.
    Anything,
}

/// Whether a tag glob can match a tag: 1 to 128 of `[A-Za-z0-9_.-]`, not starting with `.`
/// or `-`.
fn check_tag(tag: &str) -> Result<(), String> {
    const TAG: &str = "a tag is 1 to 128 of the ASCII letters, digits, `_`, `.` and `-`, and \
                       does not start with `.` or `-` (globs add `*` and `?`)";
    let fixed = tag.chars().filter(|&c| c != '*').count();
    let chars_ok = tag
        .chars()
        .all(|c| wildcard(c) || c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let starts_ok = !tag.starts_with(['.', '-']);
    if tag.is_empty() || !chars_ok || !starts_ok || fixed > 128 {
        return Err(TAG.into());
    }
    Ok(())
}

/// Whether a digest glob can match a digest as engines list them: `sha256:` (or `sha384:`,
/// `sha512:`) and lowercase hex digits of the algorithm's length; or wildcards alone.
fn check_digest(digest: &str) -> Result<(), String> {
    const DIGEST: &str = "a digest is `sha256:` and 64 lowercase hex digits (a glob such as \
                          `sha256:ab*` will do)";
    if !digest.is_empty() && digest.chars().all(wildcard) {
        return Ok(());
    }
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(DIGEST.into());
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(DIGEST.into()),
    };
    let hex_ok = hex
        .chars()
        .all(|c| wildcard(c) || c.is_ascii_digit() || ('a'..='f').contains(&c));
    let fixed = hex.chars().filter(|&c| c != '*').count();
    let length_ok = if hex.contains('*') {
        fixed <= length
    } else {
        fixed == length
    };
    if hex_ok && length_ok {
        Ok(())
    } else {
        Err(DIGEST.into())
    }
}

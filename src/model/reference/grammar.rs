//! The distribution reference grammar (`reference := name [":" tag] ["@" digest]`), parsed by
//! hand.
//!
//! Why not oci-spec's `Reference`: its one regular expression uses Unicode classes under a
//! 20 MiB size limit, and compiling it on first use kept 12 to 18 MiB resident for the life of
//! the daemon, more than everything else stowage holds (docs/benchmarks.md). This parser keeps
//! nothing. It accepts exactly what oci-spec 0.10 accepts (a property test in `mod.rs` holds
//! them together), with one intended difference: a tag's word characters are ASCII, as in
//! distribution's own Go grammar, where oci-spec's `\w` also admits Unicode letters that no
//! registry accepts.
//!
//! The grammar, from distribution's `reference/reference.go`:
//! ```text
//! name             := [domain "/"] path-component ["/" path-component]*
//! domain           := domain-component ["." domain-component]* [":" port-number]
//! domain-component := /[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]/
//! port-number      := /[0-9]+/
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]*/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" /[0-9a-fA-F]{32,}/   (sha256, sha384 or sha512 at their lengths)
//! algorithm        := /[A-Za-z][A-Za-z0-9]*/ [/[-_+.]/ /[A-Za-z][A-Za-z0-9]*/]*
//! ```

/// The longest repository path (after `library/` is added for Docker Hub names).
pub(super) const NAME_MAX: usize = 255;

const DOCKER_HUB: &str = super::DOCKER_HUB;
const DOCKER_HUB_LEGACY: &str = "index.docker.io";

/// The three parts of a reference, borrowed from the input, before normalisation.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parts<'a> {
    pub(super) name: &'a str,
    pub(super) tag: Option<&'a str>,
    pub(super) digest: Option<&'a str>,
}

/// Which rule of the grammar the input broke, worded for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Error {
    #[error("the name is empty")]
    Empty,
    #[error("leading or trailing whitespace is not allowed")]
    Whitespace,
    #[error("repository names must be lowercase")]
    Uppercase,
    #[error("the repository name is longer than 255 characters")]
    NameTooLong,
    #[error("the digest must be `sha256:` followed by 64 hex digits")]
    Digest,
    #[error(
        "a tag is 1 to 128 of the ASCII letters, digits, `_`, `.` and `-`, and does not start \
         with `.` or `-`"
    )]
    Tag,
    #[error("not a valid image reference (expected [registry/]repository[:tag][@sha256:digest])")]
    Format,
}

/// Splits `s` into name, tag and digest, checking each against the grammar.
pub(super) fn parse(s: &str) -> Result<Parts<'_>, Error> {
    if s.is_empty() {
        return Err(Error::Empty);
    }
    if s.trim() != s {
        return Err(Error::Whitespace);
    }
    // Neither name nor tag holds an `@`, so the first one starts the digest.
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A `:` after the last `/` starts the tag; one before it is the registry's port.
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if rest[colon..].find('/').is_none() => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    check_name(name)?;
    Ok(Parts { name, tag, digest })
}

/// Where the registry ends and the repository starts, with Docker Hub's defaults filled in:
/// a first component names a registry only when it has a `.` or a `:`, or is `localhost`.
pub(super) fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (first, path),
        _ => (DOCKER_HUB, name),
    };
    let domain = if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        domain
    };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    (domain.to_owned(), path)
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::Format);
    }
    let all_path = name.split('/').all(path_component);
    let domain_then_path = name
        .split_once('/')
        .is_some_and(|(first, rest)| domain(first) && rest.split('/').all(path_component));
    if all_path || domain_then_path {
        return Ok(());
    }
    // Say "lowercase" only when lowercase is all that is missing.
    let lower = name.to_ascii_lowercase();
    let lower_ok = lower.split('/').all(path_component)
        || name.split_once('/').is_some_and(|(first, rest)| {
            domain(first) && rest.to_ascii_lowercase().split('/').all(path_component)
        });
    Err(if lower_ok {
        Error::Uppercase
    } else {
        Error::Format
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between two alphanumeric runs: one `.`, one or two `_`, or only dashes.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host being dot-separated DNS labels (or an IPv4 address, which is that).
fn domain(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    port_ok && host.split('.').all(domain_component)
}

fn domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

fn check_tag(tag: &str) -> Result<(), Error> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    let ok = b.first().is_some_and(|&c| word(c))
        && b.len() <= 128
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok { Ok(()) } else { Err(Error::Tag) }
}

fn check_digest(digest: &str) -> Result<(), Error> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(Error::Digest);
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Error::Digest),
    };
    if hex.len() == length && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::Digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_between_alphanumeric_runs() {
        for ok in ["a", "a.b", "a_b", "a__b", "a-b", "a---b", "a0.b-c__d", "0"] {
            assert!(path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", ".a", "a.", "a..b", "a___b", "a.-b", "a-.b", "a_-b", "-a", "a b",
        ] {
            assert!(!path_component(bad), "{bad}");
        }
    }

    #[test]
    fn domains_are_labels_with_an_optional_port() {
        for ok in [
            "localhost",
            "Example.COM",
            "127.0.0.1:5000",
            "a-b.c",
            "xn--n3h.com",
            "a:1",
        ] {
            assert!(domain(ok), "{ok}");
        }
        for bad in [
            "",
            "-a.com",
            "a-.com",
            "a..com",
            "a:",
            "a:b",
            "a_b.com",
            "a.com:5:6",
        ] {
            assert!(!domain(bad), "{bad}");
        }
    }

    #[test]
    fn each_rule_has_its_own_error() {
        assert_eq!(parse("").unwrap_err(), Error::Empty);
        assert_eq!(parse("a ").unwrap_err(), Error::Whitespace);
        assert_eq!(parse("Nginx").unwrap_err(), Error::Uppercase);
        assert_eq!(
            parse("Registry.Example/Nginx").unwrap_err(),
            Error::Uppercase
        );
        assert_eq!(parse("a:.x").unwrap_err(), Error::Tag);
        assert_eq!(
            parse(&format!("a:{}", "x".repeat(129))).unwrap_err(),
            Error::Tag
        );
        assert!(parse(&format!("a:{}", "x".repeat(128))).is_ok());
        assert_eq!(parse("a@sha256:00").unwrap_err(), Error::Digest);
        assert_eq!(
            parse("a@md5:0123456789abcdef0123456789abcdef").unwrap_err(),
            Error::Digest
        );
        assert_eq!(parse("a//b").unwrap_err(), Error::Format);
        assert_eq!(parse("a/").unwrap_err(), Error::Format);
    }

    #[test]
    fn a_colon_before_the_last_slash_is_a_port() {
        let p = parse("test:5000/repo").unwrap();
        assert_eq!((p.name, p.tag), ("test:5000/repo", None));
        let p = parse("test.com:5000").unwrap();
        assert_eq!((p.name, p.tag), ("test.com", Some("5000")));
    }
}

use super::*;
use crate::model::reference::ImageRef;
use proptest::prelude::*;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Whether `pattern` keeps the fully qualified `name`.
fn keeps(pattern: &str, name: &str) -> bool {
    compile_keep(pattern)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .regex
        .is_match(name)
}

fn refused(pattern: &str) -> String {
    match compile_keep(pattern) {
        Ok(m) => panic!("{pattern:?} accepted as {}", m.regex),
        Err(e) => e,
    }
}

#[test]
fn globs_and_regexes() {
    let g = compile_keep("docker.io/library/*").unwrap();
    assert!(g.regex.is_match("docker.io/library/nginx:latest"));
    assert!(!g.regex.is_match("docker.io/library/a/b:1"));
    let gg = compile_keep("registry.example.com/**").unwrap();
    assert!(gg.regex.is_match("registry.example.com/a/b/c:1"));
    let r = compile_keep("regex:.*:stable").unwrap();
    assert!(r.regex.is_match("r/x:stable") && !r.regex.is_match("r/x:stable2"));
    assert!(compile_keep("regex:(").is_err());
}

#[test]
fn short_names_are_read_as_image_names_are() {
    let digest = format!("docker.io/library/alpine@sha256:{HEX}");
    for name in [
        "docker.io/library/alpine:latest",
        "docker.io/library/alpine:3.20",
        &digest,
    ] {
        assert!(keeps("alpine", name), "{name}");
        assert!(keeps("docker.io/alpine", name), "{name}");
        assert!(keeps("index.docker.io/library/alpine", name), "{name}");
    }
    for name in [
        "docker.io/library/alpine-x:1",
        "docker.io/other/alpine:1",
        "ghcr.io/library/alpine:1",
    ] {
        assert!(!keeps("alpine", name), "{name}");
    }
    assert!(keeps("busybox:*", "docker.io/library/busybox:1.36"));
    assert!(!keeps(
        "busybox:*",
        &format!("docker.io/library/busybox@sha256:{HEX}")
    ));
    assert!(keeps("busybox:1.*", "docker.io/library/busybox:1.36"));
    assert!(!keeps("busybox:1.*", "docker.io/library/busybox:2"));
    assert!(keeps("someorg/**", "docker.io/someorg/a/b:1"));
    assert!(!keeps("someorg/**", "ghcr.io/someorg/a:1"));
    assert!(keeps("grafana/grafana", "docker.io/grafana/grafana:11.1"));
    assert!(keeps("docker.io/*", "docker.io/library/nginx:1"));
    assert!(!keeps("docker.io/*", "docker.io/grafana/grafana:1"));
    assert!(keeps("docker.io/**", "docker.io/grafana/grafana:1"));
    // A registry is named by a `.`, a `:` or `localhost`.
    assert!(keeps("localhost/app", "localhost/app:1"));
    assert!(keeps("127.0.0.1:*/**", "127.0.0.1:5101/stowage-test/a:1"));
    assert!(keeps("stowage-local/**", "docker.io/stowage-local/only:1"));
}

#[test]
fn wildcard_registries_stay_as_written() {
    for name in [
        "ghcr.io/x/app:1",
        "127.0.0.1:5000/app:2",
        "docker.io/library/app:3",
    ] {
        assert!(keeps("**/app:*", name), "{name}");
    }
    assert!(!keeps("**/app:*", "ghcr.io/x/app2:1"));
    for name in [
        "ghcr.io/team/a:1",
        "127.0.0.1:5000/team/a/b:1",
        "docker.io/team/x:1",
    ] {
        assert!(keeps("*/team/**", name), "{name}");
    }
    assert!(keeps("*/app", "ghcr.io/app:1"));
    assert!(keeps("**", "anything.example/at/all@sha256:0"));
}

#[test]
fn a_name_glob_stays_in_the_name_and_a_tag_glob_matches_tags() {
    assert!(keeps(
        "docker.io/library/ngin*:1",
        "docker.io/library/nginx:1"
    ));
    assert!(!keeps(
        "docker.io/library/ngin*:1",
        "docker.io/library/nginx:12"
    ));
    assert!(keeps("nginx:1.2?", "docker.io/library/nginx:1.27"));
    assert!(!keeps("nginx:1.2?", "docker.io/library/nginx:1.2"));
    assert!(keeps("nginx:**", "docker.io/library/nginx:V1"));
    // A digest names the content, with or without the tag written beside it.
    let by_digest = format!("docker.io/library/nginx@sha256:{HEX}");
    assert!(keeps(&format!("nginx@sha256:{HEX}"), &by_digest));
    assert!(keeps(&format!("nginx:1.2@sha256:{HEX}"), &by_digest));
    assert!(keeps("nginx@sha256:01*", &by_digest));
    assert!(keeps("nginx@*", &by_digest));
    assert!(!keeps("nginx@sha256:ff*", &by_digest));
    assert!(!keeps("nginx@*", "docker.io/library/nginx:1"));
}

#[test]
fn patterns_that_can_never_match_say_why_and_what_to_write() {
    let cases = [
        ("", "an empty pattern matches no image"),
        (
            "Alpine",
            "repository names are lowercase, so \"A\" never appears in one: write \"alpine\"",
        ),
        ("Someorg/**", "write \"someorg/**\""),
        (
            "Registry.Example.com/Team/app:V1",
            "write \"Registry.Example.com/team/app:V1\"",
        ),
        ("**/App:*", "write \"**/app:*\""),
        ("ngi!nx", "\"!\" never appears in a repository name"),
        ("docker.io/library/[a-z]*", "globs have no classes"),
        (
            "my+reg.example/app",
            "\"+\" never appears in a registry host",
        ),
        (
            " nginx",
            "no leading or trailing whitespace: write \"nginx\"",
        ),
        ("nginx:", "the tag \"\" can never match"),
        ("nginx:.x", "does not start with `.` or `-`"),
        (
            "nginx:a b",
            "write \"nginx:*\" for any tag, or \"nginx\" for any tag or digest",
        ),
        (
            "nginx@sha256:abc",
            "the digest \"sha256:abc\" can never match",
        ),
        ("nginx@md5:0123", "64 lowercase hex digits"),
        (
            "nginx:1@sha256:AB*",
            "lowercase hex: write \"nginx:1@sha256:ab*\"",
        ),
        (
            ":1",
            "no repository before the tag or digest: write a name, such as \"nginx:1\"",
        ),
        (
            "*",
            "write \"**\" for every image, or \"docker.io/library/*\"",
        ),
        ("?:1", "\"docker.io/library/?:1\""),
        ("reg.example//app", "no empty path segment"),
        ("reg.example/team/", "write \"reg.example/team/**\""),
        ("/app", "write \"app\""),
        (
            "reg.example/a:b/c",
            "\":\" never appears in a repository name",
        ),
        ("regex:", "an empty regex matches no image"),
    ];
    for (pattern, why) in cases {
        let e = refused(pattern);
        assert!(e.contains(why), "{pattern:?}: {e}");
    }
}

#[test]
fn odd_patterns_that_can_match_are_accepted() {
    // Capitals a `**` may carry into a tag or a registry host, and hosts with capitals.
    for p in [
        "**App",
        "reg.example/**V1",
        "Example.COM/app",
        "**:V1",
        "*/app",
        "nginx@*",
        "nginx:**",
        "127.0.0.1:5101",
        "regex:[A-Z]+",
    ] {
        compile_keep(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    assert!(keeps("**App", "docker.io/library/nginx:myApp"));
    assert!(keeps("Example.COM/app", "Example.COM/app:1"));
}

/// References the grammar accepts, built from parts: (reference, without its tag and digest,
/// tag).
fn reference() -> impl Strategy<Value = (String, String, Option<String>)> {
    (
        prop::option::of(prop_oneof![
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,3}[a-zA-Z0-9])?(\\.[a-z]{1,3}){0,2}(:[0-9]{1,5})?",
            prop::sample::select(vec![
                "docker.io",
                "index.docker.io",
                "localhost",
                "localhost:5000"
            ])
            .prop_map(str::to_owned),
        ]),
        "[a-z0-9]{1,3}(([._]|__|-{1,3})[a-z0-9]{1,3}){0,2}(/[a-z0-9]{1,4}){0,2}",
        prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
        prop::option::of("[0-9a-f]{64}"),
    )
        .prop_map(|(host, path, tag, hex)| {
            let bare = host.map(|h| format!("{h}/")).unwrap_or_default() + &path;
            let mut full = bare.clone();
            if let Some(t) = &tag {
                full = format!("{full}:{t}");
            }
            if let Some(h) = hex {
                full = format!("{full}@sha256:{h}");
            }
            (full, bare, tag)
        })
}

proptest! {
    /// A reference written as a keep pattern keeps exactly its normalised name; without its
    /// tag, it keeps every tag and digest of the repository, and nothing else.
    #[test]
    fn a_reference_as_a_pattern_keeps_its_normalised_name(
        (full, bare, tag) in reference(),
        other_tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
    ) {
        let Ok(parsed) = full.parse::<ImageRef>() else {
            return Err(TestCaseError::reject("not a reference"));
        };
        // The grammar takes `0Aa/a` (a host's capitals), but its repository is on Docker Hub
        // and has capitals: the engine refuses such a name, so it is never listed.
        prop_assume!(!parsed.repository().chars().any(|c| c.is_ascii_uppercase()));
        let name = parsed.name();
        let exact = compile_keep(&full).map_err(|e| TestCaseError::fail(format!("{full}: {e}")))?;
        prop_assert!(exact.regex.is_match(&parsed.to_string()), "{} on {}", exact.regex, parsed);
        let other_repository = format!("{name}x:{other_tag}");
        let other_tag_of_it = format!("{name}:{other_tag}");
        prop_assert!(!exact.regex.is_match(&other_repository));
        if parsed.digest().is_none() && tag.is_some() && tag.as_deref() != Some(other_tag.as_str()) {
            prop_assert!(!exact.regex.is_match(&other_tag_of_it));
        }
        let any = compile_keep(&bare).map_err(|e| TestCaseError::fail(format!("{bare}: {e}")))?;
        for kept in [
            other_tag_of_it,
            format!("{name}:latest"),
            format!("{name}@sha256:{HEX}"),
        ] {
            prop_assert!(any.regex.is_match(&kept), "{} on {}", any.regex, kept);
        }
        let below = format!("{name}/x:{other_tag}");
        prop_assert!(!any.regex.is_match(&other_repository));
        prop_assert!(!any.regex.is_match(&below));
    }

    /// Capitals in a repository path can never match: such patterns are refused.
    #[test]
    fn capitals_in_a_repository_are_refused(
        (full, bare, _tag) in reference(),
    ) {
        let Ok(parsed) = full.parse::<ImageRef>() else {
            return Err(TestCaseError::reject("not a reference"));
        };
        prop_assume!(parsed.repository().chars().any(|c| c.is_ascii_lowercase()));
        // The last segment is always in the repository.
        let (head, last) = bare.rsplit_once('/').map_or(("", bare.as_str()), |(h, l)| (h, l));
        prop_assume!(last.chars().any(|c| c.is_ascii_lowercase()));
        let upper = if head.is_empty() {
            last.to_ascii_uppercase()
        } else {
            format!("{head}/{}", last.to_ascii_uppercase())
        };
        let e = compile_keep(&upper).err();
        prop_assert!(e.as_deref().is_some_and(|e| e.contains("lowercase")), "{upper}: {e:?}");
    }
}

//! Image references, always fully qualified.
//!
//! Operators write `nginx`; the engine hears `docker.io/library/nginx:latest`. Showing the short
//! form hides which registry a failure came from, so everything stowage prints goes through
//! [`ImageRef`], whose `Display` is the fully qualified name.

use std::fmt;
use std::str::FromStr;

mod grammar;

/// Docker Hub's registry host, as references name it.
pub(crate) const DOCKER_HUB: &str = "docker.io";

/// A normalised image reference: registry, repository, and a tag or a digest (or both).
///
/// A reference written without a tag means `:latest`, never "all tags" (the engine pulls every
/// tag of a repository when given a bare name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host, with its port when it has one (`127.0.0.1:5000`, `docker.io`).
    registry: String,
    /// Repository path inside the registry (`library/nginx`).
    repository: String,
    /// The tag; `latest` when the operator wrote neither tag nor digest.
    tag: Option<String>,
    /// The content digest (`sha256:...`) when the operator pinned one.
    digest: Option<String>,
}

/// Why a string is not an image reference, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReference(String);

impl ImageRef {
    /// Registry host (with port).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Whether the name lives on Docker Hub (where unqualified names go).
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to hand the engine's pull endpoint: by digest when there is one (content-addressed,
    /// so exactly what was pinned), otherwise by tag. Never a bare repository name.
    pub fn pull_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{}@{}", self.name(), digest),
            (None, Some(tag)) => format!("{}:{}", self.name(), tag),
            // Parsing always fills in `latest` when both are missing.
            (None, None) => format!("{}:latest", self.name()),
        }
    }

    /// The same reference by tag alone, without its digest: what to ask the registry about
    /// when checking whether a tag moved. `None` for a digest-only reference.
    pub fn by_tag(&self) -> Option<ImageRef> {
        self.tag.as_ref().map(|_| ImageRef {
            digest: None,
            ..self.clone()
        })
    }

    /// Whether this reference follows a `latest` tag (written or implied) with no digest.
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref() == Some("latest")
    }
}

impl FromStr for ImageRef {
    type Err = InvalidReference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts = grammar::parse(s).map_err(|e| InvalidReference(e.to_string()))?;
        let (registry, repository) = grammar::split_domain(parts.name);
        if repository.len() > grammar::NAME_MAX {
            return Err(InvalidReference(grammar::Error::NameTooLong.to_string()));
        }
        // Neither tag nor digest means `latest`, never "every tag".
        let tag = match (parts.tag, parts.digest) {
            (None, None) => Some("latest"),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest: parts.digest.map(str::to_owned),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An image's names as the engine lists them, sorted into tags and digests, both fully
/// qualified and without duplicates. Engines disagree on where a digest reference goes: Docker's
/// classic store lists `name@sha256:...` only under RepoDigests, while the containerd image
/// store and Podman also list an image pulled by digest under RepoTags. A digest is never a tag:
/// an image known only by digest has no tag, so it is dangling, whatever the engine calls it.
pub(crate) fn sort_engine_names(
    repo_tags: &[String],
    repo_digests: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for name in repo_tags.iter().chain(repo_digests) {
        let Ok(parsed) = name.parse::<ImageRef>() else {
            continue; // `<none>:<none>`, `<none>@<none>`
        };
        let (list, name) = match parsed.digest() {
            // `name:tag@digest` names the content, not a tag.
            Some(digest) => (&mut digests, format!("{}@{digest}", parsed.name())),
            None => (&mut tags, parsed.to_string()),
        };
        if !list.contains(&name) {
            list.push(name);
        }
    }
    (tags, digests)
}

/// The repository of a fully qualified `name:tag` or `name@digest`, as the engine lists them.
pub(crate) fn repository(name: &str) -> &str {
    if let Some((repo, _)) = name.split_once('@') {
        return repo;
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// Whether `d` is a sha256 digest as registries write them.
pub(crate) fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digest_names_listed_as_tags_are_digests() {
        let by_digest = format!("127.0.0.1:5101/a@{DIGEST}");
        // Podman and the containerd store: the digest under both lists.
        let (tags, digests) = sort_engine_names(
            std::slice::from_ref(&by_digest),
            std::slice::from_ref(&by_digest),
        );
        assert!(tags.is_empty());
        assert_eq!(digests, vec![by_digest.clone()]);
        // The classic store: placeholders dropped, names qualified.
        let (tags, digests) = sort_engine_names(
            &["<none>:<none>".into(), "nginx:1".into()],
            &["<none>@<none>".into(), format!("nginx@{DIGEST}")],
        );
        assert_eq!(tags, vec!["docker.io/library/nginx:1".to_owned()]);
        assert_eq!(digests, vec![format!("docker.io/library/nginx@{DIGEST}")]);
        // A tagged digest reference names content.
        let (tags, digests) = sort_engine_names(&[format!("127.0.0.1:5101/a:1@{DIGEST}")], &[]);
        assert!(tags.is_empty());
        assert_eq!(digests, vec![by_digest]);
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        s.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn unqualified_names_go_to_docker_hub_library() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(norm("grafana/grafana"), "docker.io/grafana/grafana:latest");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            norm("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
    }

    #[test]
    fn registries_with_ports_and_paths_are_kept() {
        assert_eq!(norm("127.0.0.1:5000/a/b:2"), "127.0.0.1:5000/a/b:2");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(norm("ghcr.io/org/app"), "ghcr.io/org/app:latest");
    }

    #[test]
    fn missing_tag_means_latest_never_all_tags() {
        let r: ImageRef = "127.0.0.1:5000/app".parse().unwrap();
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.pull_ref(), "127.0.0.1:5000/app:latest");
        assert!(r.is_latest());
    }

    #[test]
    fn digests_pull_by_digest() {
        let r: ImageRef = format!("nginx@{DIGEST}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.pull_ref(), format!("docker.io/library/nginx@{DIGEST}"));
        assert!(!r.is_latest());
        let both: ImageRef = format!("nginx:1.2@{DIGEST}").parse().unwrap();
        assert_eq!(both.pull_ref(), format!("docker.io/library/nginx@{DIGEST}"));
        assert_eq!(
            both.to_string(),
            format!("docker.io/library/nginx:1.2@{DIGEST}")
        );
    }

    #[test]
    fn bad_references_are_explained() {
        let err = |s: &str| s.parse::<ImageRef>().unwrap_err().to_string();
        assert_eq!(err("Nginx"), "repository names must be lowercase");
        assert_eq!(err(""), "the name is empty");
        assert!(err("nginx@sha256:abc").contains("64 hex digits"));
        assert!(err("nginx:bad tag").contains("a tag is 1 to 128"));
        assert!(err("ngi!nx").contains("not a valid image reference"));
        assert!(err(" nginx").contains("whitespace"));
        // Upper case in a tag is allowed by the grammar.
        assert!("nginx:V1".parse::<ImageRef>().is_ok());
    }

    proptest! {
        /// Normalising is idempotent: the printed form parses back to itself.
        #[test]
        fn display_round_trips(
            host in prop::option::of("[a-z]{1,8}(\\.[a-z]{2,4})?(:[0-9]{2,5})?"),
            path in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}",
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        ) {
            let mut s = String::new();
            if let Some(h) = &host { s.push_str(h); s.push('/'); }
            s.push_str(&path);
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            let once: ImageRef = s.parse().unwrap();
            let twice: ImageRef = once.to_string().parse().unwrap();
            prop_assert_eq!(&once, &twice);
            prop_assert!(once.tag().is_some() || once.digest().is_some());
            prop_assert!(once.to_string().starts_with(once.registry()));
        }
    }

    /// Pieces that make references interesting: separators, hosts, ports, digests.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9]{1,4}",
            3 => "[-._/:@]",
            1 => "[A-Z]{1,2}",
            2 => prop::sample::select(vec![
                "/", "/", ":", ".", "_", "__", "-", "--", "@", ":5000", "localhost", "docker.io",
                "index.docker.io", "library/", "sha256:", "sha512:", "md5:", "x.y", "é",
            ]).prop_map(str::to_owned),
            1 => "[0-9a-f]{64}",
            1 => "[0-9A-F]{32}",
        ]
    }

    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..12).prop_map(|t| t.concat())
    }

    /// The grammar accepts exactly what oci-spec's regular expression accepts, and splits it the
    /// same way. The one intended difference, Unicode letters in tags (which oci-spec takes), is
    /// skipped; `é` still appears in names and hosts, where both refuse it.
    fn agrees_with_oci_spec(s: &str) -> Result<(), TestCaseError> {
        let ours = s.parse::<ImageRef>();
        let theirs = oci_spec::distribution::Reference::try_from(s);
        let unicode_tag = s
            .split('@')
            .next()
            .and_then(|rest| rest.rsplit_once(':'))
            .is_some_and(|(_, t)| !t.contains('/') && !t.is_ascii());
        if unicode_tag {
            return Ok(());
        }
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => {
                prop_assert_eq!(o.registry(), t.registry());
                prop_assert_eq!(o.repository(), t.repository());
                prop_assert_eq!(o.tag(), t.tag());
                prop_assert_eq!(o.digest(), t.digest());
            }
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{s:?}: ours {ours:?}, oci-spec {theirs:?}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn grammar_agrees_with_oci_spec_on_token_soup(s in soup()) {
            agrees_with_oci_spec(&s)?;
        }

        #[test]
        fn grammar_agrees_with_oci_spec_on_any_ascii(s in "[ -~]{0,40}") {
            agrees_with_oci_spec(&s)?;
        }

        #[test]
        fn grammar_agrees_with_oci_spec_on_valid_shapes(
            host in prop::option::of("[a-zA-Z0-9]([a-zA-Z0-9-]{0,3}[a-zA-Z0-9])?(\\.[a-z]{1,3}){0,2}(:[0-9]{1,5})?"),
            path in "[a-z0-9]{1,3}(([._]|__|-{1,3})[a-z0-9]{1,3}){0,2}(/[a-z0-9]{1,4}){0,2}",
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,130}"),
            digest in prop::option::of("sha(256|512):[0-9a-fA-F]{64}"),
        ) {
            let mut s = host.map(|h| format!("{h}/")).unwrap_or_default() + &path;
            if let Some(t) = tag { s = format!("{s}:{t}"); }
            if let Some(d) = digest { s = format!("{s}@{d}"); }
            agrees_with_oci_spec(&s)?;
        }
    }

    #[test]
    fn tags_are_ascii_unlike_oci_spec() {
        assert!("a:é".parse::<ImageRef>().is_err());
        assert!(oci_spec::distribution::Reference::try_from("a:é").is_ok());
    }

    #[test]
    fn long_names_count_the_library_prefix() {
        let name = "a".repeat(248); // `library/` + 248 = 256
        assert!(name.parse::<ImageRef>().is_err());
        assert!(oci_spec::distribution::Reference::try_from(name.as_str()).is_err());
        assert!("a".repeat(247).parse::<ImageRef>().is_ok());
    }
}

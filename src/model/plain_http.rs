//! Which registries are spoken to over plain HTTP.
//!
//! stowage asks registries itself (digests, signatures) and has the engine pull from them: the
//! two must agree on the scheme, or stowage resolves a digest the engine cannot pull, or the
//! other way round. So it follows the engine's own list where the engine says it (`/info`'s
//! `RegistryConfig`): Docker's insecure CIDRs (127.0.0.0/8 unless an explicit
//! `insecure-registries` list leaves it out, as Docker 29.10 is reported to) and hosts, and
//! Podman's `registries.conf` entries marked `insecure`. Where the engine does not say, every
//! loopback registry is plain HTTP, as Docker has always treated 127.0.0.0/8. The config's own
//! `insecure = true` registries are plain HTTP either way.

// `core::net`: the address types alone, no sockets.
use core::net::IpAddr;

use ipnet::IpNet;

/// The registries an engine speaks plain HTTP to, as it says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineInsecure {
    /// Addresses whose registries are insecure (Docker's `InsecureRegistryCIDRs`).
    pub cidrs: Vec<IpNet>,
    /// Registries (`host[:port]`) marked insecure (`IndexConfigs` with `Secure: false`).
    pub hosts: Vec<String>,
}

impl EngineInsecure {
    /// From `/info`'s `InsecureRegistryCIDRs` and the names of its insecure `IndexConfigs`;
    /// a CIDR that does not parse is left out (it would match nothing the engine matches).
    pub fn new<'a>(
        cidrs: impl IntoIterator<Item = &'a str>,
        hosts: impl IntoIterator<Item = String>,
    ) -> EngineInsecure {
        EngineInsecure {
            cidrs: cidrs.into_iter().filter_map(|c| c.parse().ok()).collect(),
            hosts: hosts.into_iter().collect(),
        }
    }

    /// Whether the engine speaks plain HTTP to `host` (`name[:port]`): named, or an address
    /// (`localhost` is 127.0.0.1) in one of its CIDRs. Other names are not looked up.
    fn covers(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
            || address_of(host).is_some_and(|ip| self.cidrs.iter().any(|c| c.contains(&ip)))
    }
}

/// The rule for one process: the config's `insecure` registries, and the engine's (or, when
/// the engine did not say, loopback).
#[derive(Debug, Clone, Default)]
pub(crate) struct PlainHttp {
    /// The config's `insecure = true` registries and mirrors.
    config: Vec<String>,
    /// The engine's, when it said.
    engine: Option<EngineInsecure>,
}

impl PlainHttp {
    /// The config's `insecure` hosts, and what the engine said (`None`: it did not).
    pub(crate) fn new(config: Vec<String>, engine: Option<EngineInsecure>) -> PlainHttp {
        PlainHttp { config, engine }
    }

    /// Whether `host` is spoken to over plain HTTP.
    pub(crate) fn speaks(&self, host: &str) -> bool {
        self.config.iter().any(|h| h == host)
            || match &self.engine {
                Some(engine) => engine.covers(host),
                None => address_of(host).is_some_and(|ip| ip.is_loopback()),
            }
    }
}

/// The address a registry host names: an IP, with or without a port (IPv6 in brackets), or
/// `localhost`; `None` for any other name.
fn address_of(host: &str) -> Option<IpAddr> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.is_empty() => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name == "localhost" {
        return Some(IpAddr::from([127, 0, 0, 1]));
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's default: 127.0.0.0/8 insecure, Docker Hub secure.
    fn docker_default() -> EngineInsecure {
        EngineInsecure::new(["127.0.0.0/8"], [])
    }

    #[test]
    fn without_the_engine_s_word_loopback_is_plain() {
        let rule = PlainHttp::new(vec!["registry.lan:5000".into()], None);
        for host in [
            "127.0.0.1:5000",
            "127.9.9.9",
            "localhost:5000",
            "[::1]:5000",
        ] {
            assert!(rule.speaks(host), "{host}");
        }
        assert!(rule.speaks("registry.lan:5000"));
        for host in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.lan",
            "localhost.example",
        ] {
            assert!(!rule.speaks(host), "{host}");
        }
    }

    #[test]
    fn the_engine_s_list_is_followed() {
        // Docker before 29.10: the same as without its word, for IPv4.
        let docker = PlainHttp::new(vec![], Some(docker_default()));
        assert!(docker.speaks("127.0.0.1:5101"));
        assert!(docker.speaks("localhost:5000"));
        assert!(!docker.speaks("[::1]:5000"), "::1 is not in 127.0.0.0/8");
        assert!(!docker.speaks("docker.io"));
        // An explicit list that leaves loopback out (Docker 29.10): loopback is HTTPS.
        let explicit = EngineInsecure::new(["10.1.0.0/16"], ["registry.lan:5000".to_owned()]);
        let rule = PlainHttp::new(vec![], Some(explicit));
        assert!(!rule.speaks("127.0.0.1:5000"));
        assert!(!rule.speaks("localhost:5000"));
        assert!(rule.speaks("10.1.2.3:5000"));
        assert!(rule.speaks("registry.lan:5000"));
        assert!(
            !rule.speaks("registry.lan:5001"),
            "a host is named with its port"
        );
        // Podman: only what registries.conf marks insecure.
        let podman = EngineInsecure::new([], ["127.0.0.1:5101".to_owned()]);
        let rule = PlainHttp::new(vec!["mirror.lan".into()], Some(podman));
        assert!(rule.speaks("127.0.0.1:5101"));
        assert!(!rule.speaks("127.0.0.1:5102"));
        assert!(
            rule.speaks("mirror.lan"),
            "the config's insecure hosts stay plain"
        );
    }

    #[test]
    fn cidrs_that_do_not_parse_match_nothing() {
        let engine = EngineInsecure::new(["not-a-cidr", "::1/128"], []);
        assert_eq!(engine.cidrs.len(), 1);
        let rule = PlainHttp::new(vec![], Some(engine));
        assert!(rule.speaks("[::1]:5000"));
        assert!(!rule.speaks("127.0.0.1:5000"));
    }
}

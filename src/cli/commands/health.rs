//! `stowage health`: whether the running daemon is healthy, for a container's healthcheck
//! (`HEALTHCHECK CMD ["stowage", "health"]`) or a script. It asks the daemon's `/healthz` at
//! the config's `[metrics] listen` (an unspecified address, `0.0.0.0`, is asked on loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::print;
use crate::cli::error::Error;
use crate::io::probe;
use crate::service::session::load;

/// A healthcheck that hangs is a failed one; the engine's own timeout is 30 s by default.
const LIMIT: Duration = Duration::from_secs(10);

/// Exit 0 and print the daemon's answer when `/healthz` says 200; exit 1 with the reason
/// otherwise (a stuck loop, no daemon listening). Exit 2 when the config has no `[metrics]`.
pub(crate) async fn health(path: &Path) -> Result<(), Error> {
    let loaded = load(path)?;
    let Some(listen) = loaded.config.metrics else {
        return Err(Error::Usage(format!(
            "{}: no [metrics] listen: the daemon serves /healthz only there; add [metrics] \
             listen = \"127.0.0.1:9420\"",
            path.display()
        )));
    };
    let addr = reachable(listen);
    let answer = probe::get(addr, "/healthz", LIMIT)
        .await
        .map_err(|e| Error::Failed(format!("unhealthy: {e}")))?;
    match answer.status {
        200 => {
            print(&answer.body);
            Ok(())
        }
        status => Err(Error::Failed(format!(
            "unhealthy ({status} from {addr}/healthz): {}",
            answer.body.trim_end()
        ))),
    }
}

/// Where to ask a daemon listening on `listen`: its address, or loopback for an unspecified
/// one (`0.0.0.0:9420` listens on every address, loopback included).
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_asked_on_loopback() {
        let at = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9420"), "127.0.0.1:9420");
        assert_eq!(at("[::]:9420"), "[::1]:9420");
        assert_eq!(at("10.0.0.5:9420"), "10.0.0.5:9420");
    }
}

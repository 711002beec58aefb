//! Loopback networking for tests: ports, plain HTTP GETs, a throttling proxy (a slow
//! registry), and registries of a test's own that it can stop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The ports test registries and throttling proxies take, so that engines needing to be told
/// which plain-HTTP registries to trust (Podman's registries.conf) can list them all; keep in
/// step with `TEST_REGISTRY_PORTS` in scripts/test-env.sh.
pub(crate) const TEST_REGISTRY_PORTS: std::ops::Range<u16> = 5110..5200;

/// `GET path` over plain HTTP/1.1; the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).expect("an HTTP answer")
}

/// [`http_get`], or `None` when nothing answers (a server still starting).
pub(crate) fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A free loopback port from [`TEST_REGISTRY_PORTS`] (bound then released; good enough on a
/// test machine, and the bound listener is returned for callers that keep it).
pub(crate) fn bind_registry_port() -> TcpListener {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Round robin from a per-process start, so released ports are not handed out again at once.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = TEST_REGISTRY_PORTS.end - TEST_REGISTRY_PORTS.start;
    let seed = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    for _ in 0..span {
        let offset = (NEXT.fetch_add(1, Ordering::Relaxed) + seed) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", TEST_REGISTRY_PORTS.start + offset)) {
            return l;
        }
    }
    panic!("no free port in {TEST_REGISTRY_PORTS:?}")
}

/// A free loopback port for a registry (see [`bind_registry_port`]), released.
pub(crate) fn free_port() -> u16 {
    bind_registry_port()
        .local_addr()
        .expect("a bound port")
        .port()
}

/// A TCP proxy on a loopback port that forwards to `upstream`, sending the upstream's answers
/// at most `bytes_per_sec`: a registry that is slow, as a real one across a WAN can be.
pub(crate) struct Throttle {
    pub port: u16,
    /// Runs the proxy; dropping it stops the proxy.
    _runtime: tokio::runtime::Runtime,
}

impl Throttle {
    pub(crate) fn start(upstream: &str, bytes_per_sec: usize) -> Throttle {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(async {
                let listener = bind_registry_port();
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            })
            .expect("bind");
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.to_owned();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let chunk = (bytes_per_sec / 20).max(1);
                    let mut buf = vec![0u8; chunk];
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    loop {
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    up.abort();
                });
            }
        });
        Throttle {
            port,
            _runtime: runtime,
        }
    }
}

/// A registry of a test's own on `127.0.0.1:port`, that the test can stop (by dropping it).
pub(crate) struct Registry {
    child: Child,
    /// Its log, access lines included.
    pub log: PathBuf,
}

impl Registry {
    /// Serves `storage` (e.g. the plain registry's, read-only in practice), or, with `proxy`,
    /// is a pull-through cache of that registry with its own storage. With `wait`, returns once
    /// it accepts connections.
    pub(crate) fn start(
        dir: &Path,
        port: u16,
        storage: &Path,
        proxy: Option<&str>,
        wait: bool,
    ) -> Registry {
        let config = dir.join(format!("registry-{port}.yml"));
        let proxy = proxy
            .map(|p| format!("proxy:\n  remoteurl: http://{p}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{proxy}",
                storage.display()
            ),
        )
        .expect("writable temp dir");
        let log = dir.join(format!("registry-{port}.log"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("writable temp dir"))
            .spawn()
            .expect("docker-registry starts");
        if wait {
            let up = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            assert!(up, "the test registry on port {port} did not start");
        }
        Registry { child, log }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository name no other test (or earlier run) has used: `prefix-<nanoseconds>`.
pub(crate) fn fresh_repo(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!("{prefix}-{nanos}")
}

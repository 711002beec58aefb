//! A rate-limited registry, as Docker Hub is: a small HTTP proxy on a loopback port in front of
//! a test registry that adds `ratelimit-limit` and `ratelimit-remaining` to every answer,
//! counts manifest GETs against the budget (HEADs are free, as on Docker Hub), and answers 429
//! with `Retry-After` on demand. It speaks HTTP/1.1 with one request per connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::net::bind_registry_port;

#[derive(Default)]
struct Budget {
    limit: u64,
    remaining: u64,
    /// `Some(retry_after)`: manifest requests get a 429.
    refuse: Option<Option<u64>>,
    /// Request lines seen, in order.
    requests: Vec<String>,
}

/// The proxy; stops when dropped.
pub(crate) struct LimitProxy {
    pub(crate) port: u16,
    budget: Arc<Mutex<Budget>>,
    stop: Arc<AtomicBool>,
}

impl LimitProxy {
    /// A proxy in front of `upstream` (`host:port`) with `remaining` of `limit` requests.
    pub(crate) fn start(upstream: &str, limit: u64, remaining: u64) -> LimitProxy {
        let listener = bind_registry_port();
        let port = listener.local_addr().expect("a bound port").port();
        let budget = Arc::new(Mutex::new(Budget {
            limit,
            remaining,
            ..Budget::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s, upstream) = (budget.clone(), stop.clone(), upstream.to_owned());
        thread::spawn(move || accept(&listener, &upstream, &b, &s));
        LimitProxy { port, budget, stop }
    }

    /// Manifest requests get a 429 from now on, with this `Retry-After` (seconds) if any.
    pub(crate) fn refuse(&self, retry_after: Option<u64>) {
        self.budget.lock().unwrap().refuse = Some(retry_after);
    }

    /// The budget left is `remaining` from now on.
    pub(crate) fn set_remaining(&self, remaining: u64) {
        self.budget.lock().unwrap().remaining = remaining;
    }

    /// The request lines seen so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.budget.lock().unwrap().requests.clone()
    }
}

impl Drop for LimitProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept(listener: &TcpListener, upstream: &str, budget: &Arc<Mutex<Budget>>, stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let (upstream, budget) = (upstream.to_owned(), budget.clone());
        thread::spawn(move || {
            let _ = serve(client, &upstream, &budget);
        });
    }
}

/// Reads up to the end of the head (`\r\n\r\n`); the head, and any bytes after it.
fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head without its `Connection` header, closing after this exchange.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    lines.join("\r\n")
}

fn serve(mut client: TcpStream, upstream: &str, budget: &Mutex<Budget>) -> std::io::Result<()> {
    client.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    // An engine tries TLS first on a loopback registry: answer as a plain HTTP server does,
    // and it falls back to HTTP ("server gave HTTP response to HTTPS client").
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 0 {
        return Ok(());
    }
    if first[0] == 0x16 {
        return client.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    }
    let (head, rest) = read_head(&mut client)?;
    let line = head.lines().next().unwrap_or_default().to_owned();
    let manifest = line.contains("/manifests/");
    let headers = {
        let mut b = budget.lock().unwrap();
        b.requests.push(line.clone());
        if manifest && let Some(retry_after) = b.refuse {
            let retry = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            return client.write_all(
                format!(
                    "HTTP/1.1 429 Too Many Requests\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
        }
        if manifest && line.starts_with("GET ") {
            b.remaining = b.remaining.saturating_sub(1);
        }
        format!(
            "ratelimit-limit: {};w=21600\r\nratelimit-remaining: {};w=21600\r\n",
            b.limit, b.remaining
        )
    };
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(closing(&head).as_bytes())?;
    server.write_all(b"\r\n\r\n")?;
    server.write_all(&rest)?;
    // Requests here have no body beyond what came with the head (GET and HEAD).
    let (answer, body) = read_head(&mut server)?;
    client.write_all(closing(&answer).as_bytes())?;
    client.write_all(b"\r\n")?;
    client.write_all(headers.as_bytes())?;
    client.write_all(b"\r\n")?;
    client.write_all(&body)?;
    std::io::copy(&mut server, &mut client)?;
    Ok(())
}

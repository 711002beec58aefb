//! `GET /healthz` of a running daemon, for `stowage health` (a container's healthcheck, where
//! the image has no curl): one HTTP/1.1 request over TCP with hyper, already in the tree.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// What the daemon answered: the status code and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// `GET path` on `addr` within `limit`; the error says what went wrong in words.
pub(crate) async fn get(addr: SocketAddr, path: &str, limit: Duration) -> Result<Answer, String> {
    tokio::time::timeout(limit, get_once(addr, path))
        .await
        .map_err(|_| {
            format!(
                "no answer from {addr} within {}",
                humantime::format_duration(limit)
            )
        })?
}

async fn get_once(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{addr}: {e}"))?
        .to_bytes();
    connection.abort();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

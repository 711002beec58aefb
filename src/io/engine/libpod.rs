//! Podman's own API, for the one call its Docker-compatible API gets wrong for a pruner.
//!
//! Podman's compatible `DELETE /images/{name}` ignores `noprune` (Podman 4 logs "not
//! supported") and deletes every dangling parent the image leaves childless, whatever policy
//! says of them. Its libpod endpoint `DELETE /libpod/images/remove` honours `noprune`, so
//! removals go there. Measured on Podman 4.3: it answers 200 whatever happened, with an exit
//! code: 0 done, 1 no such image or name, 2 used by a container, 125 anything else (such as an
//! ID with more than one tag, or a `name@digest` that is not one of its names: "tag not known").

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use serde::Deserialize;

use crate::model::failure::{Failure, FailureClass};
use crate::model::image::Deleted;

/// A client of Podman's libpod API on its unix socket.
#[derive(Clone)]
pub(super) struct Libpod {
    client: Client<UnixConnector, Empty<Bytes>>,
    /// The socket's path.
    socket: String,
}

/// The answer of `DELETE /libpod/images/remove`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Report {
    #[serde(default)]
    deleted: Option<Vec<String>>,
    #[serde(default)]
    untagged: Option<Vec<String>>,
    exit_code: i32,
    #[serde(default)]
    errors: Option<Vec<String>>,
}

impl Libpod {
    /// A client of the socket at `host` (`unix://...`); `None` for any other address, where
    /// removals fall back to the compatible API (and are audited all the same).
    pub(super) fn at(host: &str) -> Option<Libpod> {
        let socket = host.strip_prefix("unix://")?.to_owned();
        Some(Libpod {
            client: Client::builder(TokioExecutor::new()).build(UnixConnector),
            socket,
        })
    }

    /// One removal of a name or an ID, never forced, parents never pruned.
    pub(super) async fn remove(&self, name: &str) -> Result<Deleted, Failure> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("images", name)
            .append_pair("noprune", "true")
            .append_pair("force", "false")
            .finish();
        // Any version prefix routes; v4.0.0 is the first libpod API with this endpoint's shape.
        let uri: hyper::Uri = hyperlocal::Uri::new(
            &self.socket,
            &format!("/v4.0.0/libpod/images/remove?{query}"),
        )
        .into();
        let request = hyper::Request::delete(uri)
            .body(Empty::new())
            .map_err(|e| unreachable_engine(&self.socket, &e))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable_engine(&self.socket, &e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable_engine(&self.socket, &e))?
            .to_bytes();
        let report: Report = serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                FailureClass::Engine,
                format!(
                    "Podman answered the removal of {name} with {status}: {} ({e})",
                    String::from_utf8_lossy(&body)
                ),
            )
        })?;
        report.into_deleted()
    }
}

impl Report {
    fn into_deleted(self) -> Result<Deleted, Failure> {
        let errors = self.errors.unwrap_or_default().join("; ");
        match self.exit_code {
            0 => Ok(Deleted {
                untagged: self.untagged.unwrap_or_default(),
                images: self.deleted.unwrap_or_default(),
            }),
            // No such image or name: nothing was removed. A `name@digest` Podman does not
            // keep as a name (only an image pulled by digest has one) is "tag not known",
            // with exit code 125.
            1 => Ok(Deleted::default()),
            _ if errors.ends_with("tag not known") => Ok(Deleted::default()),
            _ => Err(Failure::new(
                FailureClass::Engine,
                format!("the engine refused: {errors}"),
            )),
        }
    }
}

fn unreachable_engine(socket: &str, e: &dyn std::fmt::Display) -> Failure {
    Failure::new(
        FailureClass::Engine,
        format!("cannot talk to Podman at unix://{socket}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> Result<Deleted, Failure> {
        serde_json::from_str::<Report>(json).unwrap().into_deleted()
    }

    /// Answers as Podman 4.3 gave them.
    #[test]
    fn podman_answers_are_read_by_their_exit_code() {
        let done = report(
            r#"{"Deleted":["3182254e"],"Untagged":["127.0.0.1:5101/p/x:1"],"ExitCode":0,"Errors":null}"#,
        )
        .unwrap();
        assert_eq!(done.images, ["3182254e"]);
        assert_eq!(done.untagged, ["127.0.0.1:5101/p/x:1"]);
        let untag = report(r#"{"Untagged":["r/x:2"],"ExitCode":0,"Errors":null}"#).unwrap();
        assert!(untag.images.is_empty());
        let gone = report(r#"{"ExitCode":1,"Errors":["r/x:1: image not known"]}"#).unwrap();
        assert_eq!(gone, Deleted::default());
        let used = report(
            r#"{"ExitCode":2,"Errors":["image used by 36bf: image is in use by a container"]}"#,
        )
        .unwrap_err();
        assert!(
            used.detail.contains("refused: image used by 36bf"),
            "{used}"
        );
        let digest =
            report(r#"{"ExitCode":125,"Errors":["r/x@sha256:ca47: tag not known"]}"#).unwrap();
        assert_eq!(digest, Deleted::default());
        let tags = report(r#"{"ExitCode":125,"Errors":["unable to delete image \"31\" by digest with more than one tag"]}"#)
            .unwrap_err();
        assert!(tags.detail.contains("more than one tag"), "{tags}");
    }
}

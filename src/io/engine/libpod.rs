//! Podman's own API, for the one call its Docker-compatible API gets wrong for a pruner.
//!
//! Podman's compatible `DELETE /images/{name}` ignores `noprune` before Podman 4.6 (4.3 logs
//! "not supported") and deletes every dangling parent the image leaves childless, whatever policy
//! says of them. Its libpod endpoint `DELETE /libpod/images/remove` honours `noprune`, so
//! removals go there. Measured on Podman 4.3: it answers 200 whatever happened, with an exit
//! code: 0 done, 1 no such image or name, 2 used by a container, 125 anything else (such as an
//! ID with more than one tag, or a `name@digest` that is not one of its names: "tag not known").

use serde::Deserialize;

use super::transport::Socket;
use crate::model::failure::{Failure, FailureClass};
use crate::model::image::Deleted;

/// Podman's libpod API on its unix socket (the one the compatible API is on).
#[derive(Clone)]
pub(super) struct Libpod {
    socket: Socket,
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
    /// Podman's own API on `socket`. Over TCP there is none here: removals fall back to the
    /// compatible API (and are audited all the same).
    pub(super) fn on(socket: Socket) -> Libpod {
        Libpod { socket }
    }

    /// One removal of a name or an ID, never forced, parents never pruned.
    pub(super) async fn remove(&self, name: &str) -> Result<Deleted, Failure> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("images", name)
            .append_pair("noprune", "true")
            .append_pair("force", "false")
            .finish();
        // Any version prefix routes; v4.0.0 is the first libpod API with this endpoint's shape.
        let answer = self
            .socket
            .delete(&format!("/v4.0.0/libpod/images/remove?{query}"))
            .await
            .map_err(|e| {
                Failure::new(
                    FailureClass::Engine,
                    format!(
                        "cannot talk to Podman at unix://{}: {e}",
                        self.socket.path()
                    ),
                )
            })?;
        let report: Report = serde_json::from_slice(&answer.body).map_err(|e| {
            Failure::new(
                FailureClass::Engine,
                format!(
                    "Podman answered the removal of {name} with {}: {} ({e})",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
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

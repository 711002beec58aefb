//! An image fetched from its registry as an OCI image layout archive, the form an engine's
//! `POST /images/load` takes. This is how an image the engine holds only in part is made whole:
//! after a delete that raced a `docker create`, Docker 28's containerd store keeps the layers'
//! snapshots for the new container but drops their blobs, and a pull never fetches a layer
//! whose snapshot exists ("up to date"), so only a load brings the blobs back.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::Resolver;
use crate::model::failure::{Failure, FailureClass};
use crate::model::platform::index_platforms;
use crate::model::reference::ImageRef;

type OciAuth = oci_client::secrets::RegistryAuth;

/// The annotation that names the image a layout's entry loads as (containerd's).
const NAME_ANNOTATION: &str = "io.containerd.image.name";

/// What an archive needs of a manifest or an index.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Blob>,
    #[serde(default)]
    layers: Vec<Blob>,
    #[serde(default)]
    manifests: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct Blob {
    digest: String,
}

impl Manifest {
    /// Its media type; an OCI document may leave it out, and then its fields say which it is.
    fn media_type(&self) -> &str {
        match (&self.media_type, &self.manifests) {
            (Some(t), _) => t,
            (None, Some(_)) => "application/vnd.oci.image.index.v1+json",
            (None, None) => "application/vnd.oci.image.manifest.v1+json",
        }
    }
}

impl Resolver {
    /// Fetches `image` (`name@digest`) for the host's platform into `dir` as an OCI image
    /// layout that loads as `name`, and packs it: the archive's path. An index brings the
    /// host platform's manifest and its blobs only.
    pub async fn archive(
        &self,
        image: &ImageRef,
        name: &str,
        dir: &Path,
    ) -> Result<PathBuf, Failure> {
        let auth = self.auth(image.registry()).await;
        let layout = dir.join("layout");
        let blobs = layout.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| local(&blobs, &e))?;
        let top_digest = image
            .digest()
            .ok_or_else(|| Failure::new(FailureClass::Engine, format!("{image}: no digest")))?;
        let top_body = self.manifest(image, &auth).await?;
        let top = parse(image, &top_body)?;
        write(&blobs, top_digest, &top_body).await?;
        let media_type = top.media_type().to_owned();
        let manifest = match top.manifests {
            Some(_) => {
                self.platform_manifest(image, &top_body, &auth, &blobs)
                    .await?
            }
            None => top,
        };
        for blob in manifest.config.iter().chain(&manifest.layers) {
            self.fetch_blob(image, &blob.digest, &auth, &blobs).await?;
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": media_type,
                "digest": top_digest,
                "size": top_body.len(),
                "annotations": { NAME_ANNOTATION: name },
            }],
        });
        let write_file = |file: &str, body: Vec<u8>| {
            let path = layout.join(file);
            async move {
                tokio::fs::write(&path, body)
                    .await
                    .map_err(|e| local(&path, &e))
            }
        };
        write_file("index.json", index.to_string().into_bytes()).await?;
        write_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()).await?;
        let archive = dir.join("image.tar");
        pack(layout, archive.clone()).await?;
        Ok(archive)
    }

    /// The host platform's manifest of an index (written into `blobs` too).
    async fn platform_manifest(
        &self,
        image: &ImageRef,
        index: &[u8],
        auth: &OciAuth,
        blobs: &Path,
    ) -> Result<Manifest, Failure> {
        let platform = self.host_platform();
        let digest = index_platforms(index)
            .ok()
            .and_then(|p| p.get(platform).cloned())
            .ok_or_else(|| {
                Failure::new(
                    FailureClass::NotFound,
                    format!("{image}: no manifest for {platform} in the index"),
                )
            })?;
        let by_digest: ImageRef = format!("{}@{digest}", image.name())
            .parse()
            .map_err(|e| Failure::new(FailureClass::Engine, format!("{image}: {e}")))?;
        let body = self.manifest(&by_digest, auth).await?;
        write(blobs, &digest, &body).await?;
        parse(&by_digest, &body)
    }

    /// Streams one blob of `image`'s repository into `blobs` (the engine's load checks its
    /// digest).
    async fn fetch_blob(
        &self,
        image: &ImageRef,
        digest: &str,
        auth: &OciAuth,
        blobs: &Path,
    ) -> Result<(), Failure> {
        let (client, reference) = self.request_with(image, auth)?;
        let mut stream = self
            .blob_stream(image, digest, auth, client, &reference)
            .await?;
        let path = blob_path(blobs, digest)?;
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| local(&path, &e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::new(
                    FailureClass::Network,
                    format!("{image}: blob {digest}: {e}"),
                )
            })?;
            file.write_all(&chunk).await.map_err(|e| local(&path, &e))?;
        }
        file.flush().await.map_err(|e| local(&path, &e))
    }
}

fn parse(image: &ImageRef, body: &[u8]) -> Result<Manifest, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            FailureClass::Engine,
            format!("{image}: unreadable manifest: {e}"),
        )
    })
}

/// Where a blob goes in the layout; a digest that is not `sha256:<hex>` is refused rather than
/// made a path.
fn blob_path(blobs: &Path, digest: &str) -> Result<PathBuf, Failure> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(blobs.join(hex))
        }
        _ => Err(Failure::new(
            FailureClass::Engine,
            format!("unexpected digest {digest:?} in a manifest"),
        )),
    }
}

async fn write(blobs: &Path, digest: &str, body: &[u8]) -> Result<(), Failure> {
    let path = blob_path(blobs, digest)?;
    tokio::fs::write(&path, body)
        .await
        .map_err(|e| local(&path, &e))
}

/// Packs the layout directory into a tar archive (its entries at the archive's root).
async fn pack(layout: PathBuf, archive: PathBuf) -> Result<(), Failure> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&archive).map_err(|e| local(&archive, &e))?;
        let mut tar = tar::Builder::new(file);
        tar.append_dir_all(".", &layout)
            .and_then(|()| tar.into_inner())
            .map(drop)
            .map_err(|e| local(&archive, &e))
    })
    .await
    .map_err(|e| Failure::new(FailureClass::Engine, format!("packing the image: {e}")))?
}

fn local(path: &Path, e: &std::io::Error) -> Failure {
    Failure::new(FailureClass::Engine, format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_s_path_is_its_hex_and_nothing_else() {
        let blobs = Path::new("/x/blobs/sha256");
        assert_eq!(
            blob_path(blobs, "sha256:ab12").unwrap(),
            Path::new("/x/blobs/sha256/ab12")
        );
        for bad in [
            "sha256:../../etc",
            "sha256:",
            "md5:ab",
            "ab12",
            "sha256:ab/12",
        ] {
            assert!(blob_path(blobs, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_document_without_a_media_type_is_told_by_its_fields() {
        let index: Manifest = serde_json::from_str(r#"{"manifests":[]}"#).unwrap();
        assert_eq!(
            index.media_type(),
            "application/vnd.oci.image.index.v1+json"
        );
        let manifest: Manifest =
            serde_json::from_str(r#"{"config":{"digest":"sha256:aa"},"layers":[]}"#).unwrap();
        assert_eq!(
            manifest.media_type(),
            "application/vnd.oci.image.manifest.v1+json"
        );
        let docker: Manifest = serde_json::from_str(
            r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
        )
        .unwrap();
        assert_eq!(
            docker.media_type(),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
}

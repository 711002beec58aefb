//! Fetching a digest's cosign signatures: the manifest tagged `sha256-<hex>.sig` in the same
//! repository, then each simple-signing payload it lists (a few hundred bytes each). The same
//! path as the tag checks (stowage's own requests, oci-client for tokens and for anything
//! unexpected), so credentials, 429s and budgets apply to it alike.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Resolver;
use super::direct::NotDone;
use crate::model::failure::{Failure, FailureClass};
use crate::model::reference::ImageRef;
use crate::model::signature::{
    MAX_PAYLOAD, SIGNATURE_ANNOTATION, SIMPLE_SIGNING, SignatureLayer, signature_tag,
};

/// A signature manifest: only the layers matter.
#[derive(Deserialize)]
struct SignatureManifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Resolver {
    /// The signature layers the registry holds for `signed` (`name@digest`); empty when there
    /// are none. Layers that are not simple-signing payloads, or too large to be one, are left
    /// out; a payload that does not match its digest is an error, as any corrupt content is.
    pub async fn signatures(&self, signed: &ImageRef) -> Result<Vec<SignatureLayer>, Failure> {
        let Some(tag) = signed.digest().and_then(signature_tag) else {
            return Ok(Vec::new());
        };
        let at_tag: ImageRef = format!("{}:{tag}", signed.name())
            .parse()
            .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
        let auth = self.auth(signed.registry()).await;
        let body = match self.manifest(&at_tag, &auth).await {
            Ok(body) => body,
            Err(f) if f.class == FailureClass::NotFound => return Ok(Vec::new()),
            Err(f) => return Err(f),
        };
        let manifest: SignatureManifest = serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                FailureClass::Signature,
                format!("the signature manifest {at_tag} is unreadable: {e}"),
            )
        })?;
        let mut out = Vec::new();
        for layer in manifest.layers {
            if layer.media_type != SIMPLE_SIGNING || layer.size > MAX_PAYLOAD {
                continue;
            }
            let payload = self.payload(&at_tag, &layer.digest, &auth).await?;
            out.push(SignatureLayer {
                payload,
                signature: layer.annotations.get(SIGNATURE_ANNOTATION).cloned(),
            });
        }
        Ok(out)
    }

    /// The manifest `image` names (by tag), as bytes.
    async fn manifest(
        &self,
        image: &ImageRef,
        auth: &oci_client::secrets::RegistryAuth,
    ) -> Result<Vec<u8>, Failure> {
        let (client, reference) = self.request_with(image, auth)?;
        if let Some(direct) = &self.direct {
            match direct.get(image, auth, (&client, &reference)).await {
                Ok(body) => return Ok(body),
                Err(NotDone::Refused(f)) => return Err(f),
                Err(NotDone::Fallback) => {}
            }
        }
        client
            .pull_manifest_raw(&reference, auth, super::MANIFEST_TYPES)
            .await
            .map(|(body, _)| body.to_vec())
            .map_err(|e| self.failure(image, e))
    }

    /// One payload blob of `image`'s repository, checked against `digest`.
    async fn payload(
        &self,
        image: &ImageRef,
        digest: &str,
        auth: &oci_client::secrets::RegistryAuth,
    ) -> Result<Vec<u8>, Failure> {
        let (client, reference) = self.request_with(image, auth)?;
        if let Some(direct) = &self.direct {
            let tokens = (&client, &reference);
            match direct.blob(image, digest, MAX_PAYLOAD, auth, tokens).await {
                Ok(body) => return Ok(body),
                Err(NotDone::Refused(f)) => return Err(f),
                Err(NotDone::Fallback) => {}
            }
        }
        let mut body = Vec::new();
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        client
            .pull_blob(&reference, digest, &mut body)
            .await
            .map_err(|e| self.failure(image, e))?;
        if body.len() as u64 > MAX_PAYLOAD || !super::direct::matches_digest(&body, digest) {
            return Err(Failure::new(
                FailureClass::Signature,
                format!("the signature payload {digest} of {image} does not match its digest"),
            ));
        }
        Ok(body)
    }
}

//! Fetching a digest's cosign signatures, in both layouts (`model::signature`):
//! - bundles: the referrers API, or where the registry has none, the index tagged
//!   `sha256-<hex>`; then each listed manifest that may be a bundle, and its bundle layer;
//! - legacy: the manifest tagged `sha256-<hex>.sig`, then each simple-signing payload it lists.
//!
//! Every request takes the same path as the tag checks (stowage's own requests, oci-client for
//! tokens and for anything unexpected), so credentials, 429s and budgets apply alike. A 404 is
//! an answer here: no signature of that kind, and no second request to classify it.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use serde::Deserialize;

use super::Resolver;
use super::direct::NotDone;
use crate::model::failure::{Failure, FailureClass};
use crate::model::reference::ImageRef;
use crate::model::signature::{
    EMPTY_TYPE, MAX_PAYLOAD, MAX_REFERRERS, MAX_SIGNATURES, SIGNATURE_ANNOTATION, SIMPLE_SIGNING,
    Signature, SignatureLayer, is_bundle_type, referrers_tag, signature_tag,
};

type OciAuth = oci_client::secrets::RegistryAuth;

/// A manifest as signatures are read from it: a `.sig` manifest's layers, or an artifact's
/// type, subject and layers.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// An index of referrers (the API's answer, or the fallback tag's).
#[derive(Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Whether the referrer may be a bundle. Entries of the fallback index that some cosign
    /// versions write lack their type, or carry the empty config's (cosign #4641): those are
    /// read too. An entry stating another type (an SBOM, say) is not.
    fn may_be_bundle(&self) -> bool {
        self.artifact_type
            .as_deref()
            .is_none_or(|t| t.is_empty() || t == EMPTY_TYPE || is_bundle_type(t))
    }
}

impl SignatureManifest {
    /// Whether this manifest is a Sigstore bundle artifact about `digest`.
    fn is_bundle_of(&self, digest: &str) -> bool {
        let typed = self
            .artifact_type
            .as_deref()
            .or(self.config.as_ref().map(|c| c.media_type.as_str()))
            .is_some_and(is_bundle_type);
        typed && self.subject.as_ref().is_some_and(|s| s.digest == digest)
    }
}

impl Resolver {
    /// The signatures the registry holds for `signed` (`name@digest`): bundles first, as
    /// cosign looks for them, then legacy layers; empty when there are none. What is too large
    /// to be a signature is left out; content that does not match its digest is an error, as
    /// any corrupt content is.
    pub async fn signatures(&self, signed: &ImageRef) -> Result<Vec<Signature>, Failure> {
        let Some(digest) = signed.digest() else {
            return Ok(Vec::new());
        };
        let auth = self.auth(signed.registry()).await;
        let mut out = self.bundles(signed, digest, &auth).await?;
        let legacy = self.legacy(signed, digest, &auth).await?;
        out.extend(legacy.into_iter().map(Signature::Legacy));
        Ok(out)
    }

    /// The bundles among the referrers of `digest`.
    async fn bundles(
        &self,
        signed: &ImageRef,
        digest: &str,
        auth: &OciAuth,
    ) -> Result<Vec<Signature>, Failure> {
        let index = match self.referrers(signed, digest, auth).await? {
            Some(index) => index,
            None => self.referrers_by_tag(signed, digest, auth).await?,
        };
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut listed = BTreeSet::new();
        let entries = index
            .iter()
            .filter(|d| d.may_be_bundle() && listed.insert(d.digest.as_str()))
            .take(MAX_REFERRERS);
        for entry in entries {
            let artifact = at(signed, &format!("@{}", entry.digest))?;
            // A listed manifest that is gone, or is not one, is no signature; it does not
            // stand in the way of those that are.
            let manifest: SignatureManifest = match self.manifest(&artifact, auth).await {
                Ok(body) => match serde_json::from_slice(&body) {
                    Ok(m) => m,
                    Err(_) => continue,
                },
                Err(f) if f.class == FailureClass::NotFound => continue,
                Err(f) => return Err(f),
            };
            if !manifest.is_bundle_of(digest) {
                continue;
            }
            let bundles = manifest
                .layers
                .iter()
                .filter(|l| is_bundle_type(&l.media_type) && l.size <= MAX_PAYLOAD);
            for layer in bundles {
                // Each blob once, and no more than a digest can have signatures: a listing
                // built to multiply requests gets no further.
                if seen.len() >= MAX_SIGNATURES || !seen.insert(layer.digest.clone()) {
                    continue;
                }
                if let Some(json) = self.payload(&artifact, &layer.digest, auth).await? {
                    out.push(Signature::Bundle(json));
                }
            }
        }
        Ok(out)
    }

    /// What the referrers API lists for `digest`; `None` when the registry has no such API.
    async fn referrers(
        &self,
        signed: &ImageRef,
        digest: &str,
        auth: &OciAuth,
    ) -> Result<Option<Vec<Descriptor>>, Failure> {
        let Some(direct) = &self.direct else {
            return Ok(None);
        };
        let (client, reference) = self.request_with(signed, auth)?;
        match direct
            .referrers(signed, digest, auth, (client.as_ref(), &reference))
            .await
        {
            Ok(body) => Ok(Some(read::<ReferrersIndex>(signed, &body)?.manifests)),
            Err(NotDone::Refused(f)) => Err(f),
            Err(NotDone::TooLarge) => Err(too_large(signed, "its referrers")),
            // No API (404), or an answer this path does not read: the fallback tag, which
            // any registry serves, is asked next.
            Err(NotDone::Missing | NotDone::Fallback) => Ok(None),
        }
    }

    /// The index tagged `sha256-<hex>`, where cosign lists referrers on registries without
    /// the API; empty when there is none.
    async fn referrers_by_tag(
        &self,
        signed: &ImageRef,
        digest: &str,
        auth: &OciAuth,
    ) -> Result<Vec<Descriptor>, Failure> {
        let Some(tag) = referrers_tag(digest) else {
            return Ok(Vec::new());
        };
        let at_tag = at(signed, &format!(":{tag}"))?;
        match self.manifest(&at_tag, auth).await {
            Ok(body) => Ok(read::<ReferrersIndex>(&at_tag, &body)?.manifests),
            Err(f) if f.class == FailureClass::NotFound => Ok(Vec::new()),
            Err(f) => Err(f),
        }
    }

    /// The simple-signing layers of the manifest tagged `sha256-<hex>.sig`.
    async fn legacy(
        &self,
        signed: &ImageRef,
        digest: &str,
        auth: &OciAuth,
    ) -> Result<Vec<SignatureLayer>, Failure> {
        let Some(tag) = signature_tag(digest) else {
            return Ok(Vec::new());
        };
        let at_tag = at(signed, &format!(":{tag}"))?;
        let body = match self.manifest(&at_tag, auth).await {
            Ok(body) => body,
            Err(f) if f.class == FailureClass::NotFound => return Ok(Vec::new()),
            Err(f) => return Err(f),
        };
        let manifest: SignatureManifest = read(&at_tag, &body)?;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let payloads = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING && l.size <= MAX_PAYLOAD);
        for layer in payloads {
            let signature = layer.annotations.get(SIGNATURE_ANNOTATION).cloned();
            // The same payload signed again is a layer of its own: each pair once.
            let key = (layer.digest.clone(), signature.clone());
            if seen.len() >= MAX_SIGNATURES || !seen.insert(key) {
                continue;
            }
            if let Some(payload) = self.payload(&at_tag, &layer.digest, auth).await? {
                out.push(SignatureLayer { payload, signature });
            }
        }
        Ok(out)
    }

    /// The manifest `image` names, as bytes. A 404 is [`FailureClass::NotFound`] at once.
    pub(super) async fn manifest(
        &self,
        image: &ImageRef,
        auth: &OciAuth,
    ) -> Result<Vec<u8>, Failure> {
        let (client, reference) = self.request_with(image, auth)?;
        if let Some(direct) = &self.direct {
            match direct.get(image, auth, (client.as_ref(), &reference)).await {
                Ok(body) => return Ok(body),
                Err(NotDone::Refused(f)) => return Err(f),
                Err(NotDone::Missing) => {
                    return Err(Failure::new(
                        FailureClass::NotFound,
                        format!("{image}: not found"),
                    ));
                }
                Err(NotDone::TooLarge) => return Err(too_large(image, "its manifest")),
                Err(NotDone::Fallback) => {}
            }
        }
        self.fallback(image, client)?
            .pull_manifest_raw(&reference, auth, super::MANIFEST_TYPES)
            .await
            .map(|(body, _)| body.to_vec())
            .map_err(|e| self.failure(image, e))
    }

    /// One blob of `image`'s repository through oci-client (`client` and `reference` from
    /// [`Resolver::request_with`]), as a stream.
    pub(super) async fn blob_stream(
        &self,
        image: &ImageRef,
        digest: &str,
        auth: &OciAuth,
        client: Option<oci_client::Client>,
        reference: &oci_client::Reference,
    ) -> Result<BoxStream<'static, std::io::Result<bytes::Bytes>>, Failure> {
        let client = self.fallback(image, client)?;
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        Ok(client
            .pull_blob_stream(reference, digest)
            .await
            .map_err(|e| self.failure(image, e))?
            .stream)
    }

    /// One payload or bundle blob of `image`'s repository, checked against `digest`; `None`
    /// when it is larger than a signature can be (whatever its descriptor said), so it is
    /// not one.
    async fn payload(
        &self,
        image: &ImageRef,
        digest: &str,
        auth: &OciAuth,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let (client, reference) = self.request_with(image, auth)?;
        if let Some(direct) = &self.direct {
            let tokens = (client.as_ref(), &reference);
            match direct.blob(image, digest, MAX_PAYLOAD, auth, tokens).await {
                Ok(body) => return Ok(Some(body)),
                Err(NotDone::Refused(f)) => return Err(f),
                Err(NotDone::TooLarge) => return Ok(None),
                Err(NotDone::Fallback | NotDone::Missing) => {}
            }
        }
        // Streamed, and never past the limit: a registry that sends without end must not fill
        // memory.
        let mut stream = self
            .blob_stream(image, digest, auth, client, &reference)
            .await?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::new(
                    FailureClass::Network,
                    format!("{image}: blob {digest}: {e}"),
                )
            })?;
            if (body.len() + chunk.len()) as u64 > MAX_PAYLOAD {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        if !super::direct::matches_digest(&body, digest) {
            return Err(Failure::new(
                FailureClass::Signature,
                format!("the signature payload {digest} of {image} does not match its digest"),
            ));
        }
        Ok(Some(body))
    }
}

/// The failure of a signature lookup whose answer was larger than any such answer can be.
fn too_large(image: &ImageRef, what: &str) -> Failure {
    Failure::new(
        FailureClass::Signature,
        format!("{what} of {image} are larger than 4 MiB: not read"),
    )
}

/// `signed`'s repository at `suffix` (`:tag` or `@digest`).
fn at(signed: &ImageRef, suffix: &str) -> Result<ImageRef, Failure> {
    format!("{}{suffix}", signed.name())
        .parse()
        .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))
}

/// A signature manifest or index, read as JSON.
fn read<T: serde::de::DeserializeOwned>(image: &ImageRef, body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            FailureClass::Signature,
            format!("the signature manifest {image} is unreadable: {e}"),
        )
    })
}

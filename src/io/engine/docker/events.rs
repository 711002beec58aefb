//! The engine's events, as stowage reads them: live, for container uses and changes to the
//! store during a prune; and bounded, for the deletions since the last cycle.

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;

use super::{DockerEngine, failure_from};
use crate::model::failure::{Failure, FailureClass};
use crate::model::image::{
    Deletions, IdQuery, ImageStore, StoreEvent, own_image_query, qualified_id,
};

/// How many events dockerd keeps for `since` queries (moby's `eventsLimit`).
const DOCKER_EVENTS_KEPT: usize = 256;

impl DockerEngine {
    /// [`Store::deleted_since`](super::super::Store::deleted_since).
    pub(super) async fn deletions_since(&self, since_ns: i64) -> Result<Deletions, Failure> {
        // Podman's compatible API streams nothing when given an end (Podman 4.3, checked);
        // without one it follows forever.
        if self.image_store == ImageStore::Podman {
            return Ok(Deletions::default());
        }
        // To the nanosecond: an end in whole seconds would leave out this second's events, and
        // one in the future would hold the answer open until then. Every kind of event, so
        // that a full buffer shows.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let until = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let options = EventsOptionsBuilder::new()
            .since(&(since_ns / 1_000_000_000).to_string())
            .until(&until)
            .build();
        let events = self.docker.events(Some(options));
        let collected = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            events.collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| {
            Failure::new(
                FailureClass::Engine,
                format!(
                    "the Docker engine at {} did not list its past events in time",
                    self.host
                ),
            )
        })?;
        // dockerd keeps its last 256 events: as many as that, and older ones may be gone.
        let complete = collected.len() < DOCKER_EVENTS_KEPT;
        let mut ids = Vec::new();
        for event in collected {
            let event = event.map_err(|e| failure_from(&self.host, None, e))?;
            // The query is by the second; the last look may have been in the same one.
            let after = event.time_nano.is_none_or(|t| t > since_ns);
            let deletion = event.typ == Some(bollard::models::EventMessageTypeEnum::IMAGE)
                && event.action.as_deref() == Some("delete");
            if let (true, true, Some(id)) = (after, deletion, event.actor.and_then(|a| a.id)) {
                ids.push(qualified_id(&id));
            }
        }
        Ok(Deletions { ids, complete })
    }

    /// [`Store::store_events`](super::super::Store::store_events).
    pub(super) fn events_since(
        &self,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<StoreEvent, Failure>> + Send + 'static {
        // Keys are ANDed, values ORed: containers' create and start; images' delete (Docker)
        // or remove (Podman), and what names them or takes a name away. Other pairs the
        // filter lets through are dropped below.
        let filters = std::collections::HashMap::from([
            (
                "type".to_owned(),
                vec!["container".to_owned(), "image".to_owned()],
            ),
            (
                "event".to_owned(),
                [
                    "create", "start", "delete", "remove", "tag", "untag", "pull", "load",
                    "import", "build",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
        ]);
        let options = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let host = self.host.clone();
        self.docker.events(Some(options)).filter_map(move |event| {
            let event = event
                .map_err(|e| failure_from(&host, None, e))
                .map(store_event)
                .transpose();
            std::future::ready(event)
        })
    }
}

/// A container's use of an image, or an image's deletion; `None` for anything else.
fn store_event(event: bollard::models::EventMessage) -> Option<StoreEvent> {
    use bollard::models::EventMessageTypeEnum as Type;
    let time = event.time.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let time_ns = event
        .time_nano
        .unwrap_or_else(|| time.saturating_mul(1_000_000_000));
    let action = event.action.unwrap_or_default();
    let actor = event.actor.unwrap_or_default();
    match (event.typ?, action.as_str()) {
        (Type::IMAGE, "delete" | "remove") => Some(StoreEvent::Gone {
            id: qualified_id(&actor.id?),
            time_ns,
        }),
        (Type::IMAGE, "untag") => Some(StoreEvent::Unnamed {
            id: qualified_id(&actor.id?),
            time_ns,
            name: actor.attributes.and_then(|mut a| a.remove("name")),
        }),
        // A tag names the image's ID and the name given. A pull names the reference pulled
        // (Docker, Podman 4) or the image's ID and, as `name`, the reference (Podman 5); a pull
        // gives the image that name. Podman's build says "build" of the new image, and no "tag".
        (Type::IMAGE, "tag" | "pull" | "load" | "import" | "build") => {
            let id = actor.id.unwrap_or_default();
            // A name only where the event names the image it was given to.
            let (id, name) = match (action.as_str(), own_image_query(&id)) {
                ("tag" | "pull", Ok(IdQuery::Full(full))) => {
                    (full, actor.attributes.and_then(|mut a| a.remove("name")))
                }
                _ => (id, None),
            };
            Some(StoreEvent::Named { id, time_ns, name })
        }
        // Named as the container was created with it: resolving it here would hold back the
        // events behind it while the engine answers (the pruner reads what has arrived).
        (Type::CONTAINER, "create" | "start") => Some(StoreEvent::Used {
            image: actor.attributes?.remove("image")?,
            time,
            time_ns,
            created: action == "create",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Option<StoreEvent> {
        store_event(serde_json::from_str(json).unwrap())
    }

    /// A tag names the image (Podman says its ID without `sha256:`) and the name it was given,
    /// which a prune needs when the engine deletes the image with that name.
    #[test]
    fn a_tag_event_says_which_image_and_which_name() {
        // As Podman 5.4 sent it for `docker tag IMAGE localhost/probe:x`.
        let podman = r#"{"status":"tag","id":"1fab","Type":"image","Action":"tag",
            "Actor":{"ID":"1fab000000000000000000000000000000000000000000000000000000000000","Attributes":{"image":"","name":"localhost/probe:x","podId":""}},
            "scope":"local","time":1796658404,"timeNano":1796658404486701080}"#;
        assert_eq!(
            event(podman),
            Some(StoreEvent::Named {
                id: format!("sha256:1fab{}", "0".repeat(60)),
                time_ns: 1_796_658_404_486_701_080,
                name: Some("localhost/probe:x".into()),
            })
        );
        // Docker 29 (API 1.52) sends no `status`, `id` or `from`: `Action` and `Actor` say it.
        let docker = r#"{"Type":"image","Action":"tag",
            "Actor":{"ID":"sha256:2b2b000000000000000000000000000000000000000000000000000000000000","Attributes":{"name":"r.example/app:2"}},
            "scope":"local","time":1796658405,"timeNano":1796658405000000000}"#;
        assert_eq!(
            event(docker),
            Some(StoreEvent::Named {
                id: format!("sha256:2b2b{}", "0".repeat(60)),
                time_ns: 1_796_658_405_000_000_000,
                name: Some("r.example/app:2".into()),
            })
        );
        // A pull names what was pulled, and gives no name of its own.
        let pull = r#"{"Type":"image","Action":"pull","Actor":{"ID":"r.example/app:3"},
            "time":1796658406,"timeNano":1796658406000000000}"#;
        assert!(matches!(
            event(pull),
            Some(StoreEvent::Named { name: None, .. })
        ));
    }
}

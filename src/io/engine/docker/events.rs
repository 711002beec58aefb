//! The engine's events, as stowage reads them: live, for container uses and changes to the
//! store during a prune; and bounded, for the deletions since the last cycle.

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;

use super::{DockerEngine, failure_from};
use crate::model::failure::{Failure, FailureClass};
use crate::model::image::{Deletions, ImageStore, StoreEvent, qualified_id};

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
        }),
        // A pull names the reference pulled, not an ID. Podman's build says "build" of the new
        // image, and no "tag".
        (Type::IMAGE, "tag" | "pull" | "load" | "import" | "build") => Some(StoreEvent::Named {
            id: actor.id.unwrap_or_default(),
            time_ns,
        }),
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

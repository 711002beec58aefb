//! The real engine behind the store trait, with the pruner's view narrowed to a test's own
//! images (a test may not prune what other tests left), and a hook that changes the store in
//! the instant before the cycle's first DELETE: the moment a rebuild, a pull or a new name
//! lands between a plan and its removal.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A change to the store, made once, right before the first DELETE.
pub(crate) type Churn = Box<dyn FnOnce() + Send>;

/// The real engine, listing only the images in `scope`.
pub(crate) struct ScopedStore {
    pub inner: stowage::DockerEngine,
    /// The image IDs the pruner may see, besides those built after it connected (by the
    /// test's churn).
    scope: Mutex<HashSet<String>>,
    /// When it connected (seconds).
    since: i64,
    /// Run before the first DELETE (of a name of the image with this ID, if one is given).
    churn: Mutex<Option<(Option<String>, Churn)>>,
    /// Run once the plan is made, as the removals start, if set.
    after_plan: Mutex<Option<Churn>>,
    /// How many times the containers were listed.
    container_listings: AtomicUsize,
    /// How long a change's events take to reach stowage, at most, on this engine.
    events_settle: std::time::Duration,
}

impl ScopedStore {
    pub(crate) async fn connect(env: &super::Env, scope: &[String]) -> ScopedStore {
        ScopedStore {
            inner: stowage::DockerEngine::connect(Some(&env.docker_host))
                .await
                .expect("the engine under test"),
            scope: Mutex::new(scope.iter().cloned().collect()),
            since: chrono::Utc::now().timestamp(),
            churn: Mutex::new(None),
            after_plan: Mutex::new(None),
            container_listings: AtomicUsize::new(0),
            // Podman's events go through a file it reads again at intervals.
            events_settle: std::time::Duration::from_secs(if env.engine.is_podman() {
                2
            } else {
                1
            }),
        }
    }

    /// Makes `churn` happen right before the next DELETE.
    pub(crate) fn before_delete(&self, churn: Churn) {
        *self.churn.lock().unwrap() = Some((None, churn));
    }

    /// Makes `churn` happen right before the first DELETE of a name (or the ID) of image `id`.
    pub(crate) fn before_deleting(&self, id: &str, churn: Churn) {
        *self.churn.lock().unwrap() = Some((Some(id.to_owned()), churn));
    }

    /// Makes `churn` happen once the plan is made, before any removal: the store changes
    /// during a prune's pause.
    pub(crate) fn after_plan(&self, churn: Churn) {
        *self.after_plan.lock().unwrap() = Some(churn);
    }

    /// A pruner of `session` over this store, with nothing in flight and no stop.
    pub(crate) fn pruner<'a>(
        &'a self,
        session: &'a stowage::Session,
        settings: &'a stowage::PruneSettings,
    ) -> stowage::Pruner<'a, ScopedStore> {
        session.pruner(
            self,
            settings,
            stowage::InFlight::default(),
            stowage::Shutdown::new(),
        )
    }
}

impl stowage::Store for ScopedStore {
    fn image_store(&self) -> stowage::ImageStore {
        self.inner.image_store()
    }

    fn build_cache(&self) -> stowage::BuildCache {
        self.inner.build_cache()
    }

    fn clock_ahead(&self) -> i64 {
        self.inner.clock_ahead()
    }

    async fn store(&self) -> Result<Vec<stowage::StoreImage>, stowage::Failure> {
        let all = self.inner.store().await?;
        let scope = self.scope.lock().unwrap().clone();
        Ok(all
            .into_iter()
            .filter(|i| scope.contains(&i.id) || i.created >= self.since)
            .collect())
    }

    async fn container_images(&self) -> Result<HashSet<String>, stowage::Failure> {
        // The plan lists the containers once; the removals' first look is the second.
        let second = self.container_listings.fetch_add(1, Ordering::SeqCst) == 1;
        let churn = if second {
            self.after_plan.lock().unwrap().take()
        } else {
            None
        };
        if let Some(churn) = churn {
            tokio::task::block_in_place(|| {
                churn();
                // The engine's events of it reach stowage a while after the CLI returns: here
                // under 0.2 s on Docker, under 1 s on Podman (docs/reliability.md), well
                // inside a prune's pause.
                std::thread::sleep(self.events_settle);
            });
        }
        self.inner.container_images().await
    }

    async fn containers_created(&self, id: &str) -> Result<Vec<i64>, stowage::Failure> {
        self.inner.containers_created(id).await
    }

    async fn image_named(
        &self,
        name: &str,
    ) -> Result<Option<stowage::LocalImage>, stowage::Failure> {
        self.inner.image_named(name).await
    }

    async fn names_of(&self, id: &str) -> Result<Option<stowage::LocalImage>, stowage::Failure> {
        self.inner.names_of(id).await
    }

    async fn delete(&self, name: &str) -> Result<stowage::Deleted, stowage::Failure> {
        let wanted = self
            .churn
            .lock()
            .unwrap()
            .as_ref()
            .map(|(id, _)| id.clone());
        let due = match wanted {
            None => false,
            Some(None) => true,
            Some(Some(id)) => self
                .inner
                .image_named(name)
                .await?
                .is_some_and(|i| i.id == id),
        };
        let churn = if due {
            self.churn.lock().unwrap().take().map(|(_, churn)| churn)
        } else {
            None
        };
        if let Some(churn) = churn {
            // The docker CLI blocks; the test runtime has a thread to spare.
            tokio::task::block_in_place(churn);
        }
        self.inner.delete(name).await
    }

    async fn retag(&self, id: &str, name: &str) -> Result<(), stowage::Failure> {
        self.inner.retag(id, name).await
    }

    async fn has_image(&self, id: &str) -> Result<bool, stowage::Failure> {
        self.inner.has_image(id).await
    }

    async fn image_whole(&self, id: &str) -> Result<bool, stowage::Failure> {
        self.inner.image_whole(id).await
    }

    async fn load(&self, archive: &std::path::Path) -> Result<(), stowage::Failure> {
        self.inner.load(archive).await
    }

    async fn restore(
        &self,
        by_digest: &stowage::ImageRef,
        tags: &[String],
        auth: Option<stowage::RegistryAuth>,
    ) -> Result<(), stowage::Failure> {
        self.inner.restore(by_digest, tags, auth).await
    }

    async fn data_root(&self) -> Result<Option<std::path::PathBuf>, stowage::Failure> {
        self.inner.data_root().await
    }

    async fn prune_build_cache(
        &self,
        max_age: Option<std::time::Duration>,
        max_bytes: Option<u64>,
    ) -> Result<u64, stowage::Failure> {
        self.inner.prune_build_cache(max_age, max_bytes).await
    }

    async fn container_image(&self, container: &str) -> Result<Option<String>, stowage::Failure> {
        self.inner.container_image(container).await
    }

    async fn deleted_since(&self, since: i64) -> Result<stowage::Deletions, stowage::Failure> {
        self.inner.deleted_since(since).await
    }

    fn store_events(
        &self,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<stowage::StoreEvent, stowage::Failure>> + Send + 'static
    {
        self.inner.store_events(since)
    }
}

//! One config's session: the config and lock as loaded, every image's pin, credentials, the
//! registry client and the state file's content. The daemon has one at a time (a reload makes
//! the next); each command has one.

use std::path::Path;
use std::sync::Mutex;

use crate::decide::pin::{Pinned, pin_images};
use crate::io::credentials::CredentialSource;
use crate::io::engine::Engine;
use crate::io::registry::{Registry, Resolver};
use crate::model::failure::Failure;
use crate::model::problem::Problem;
use crate::model::sync::Locked;
use crate::policy::config::{Config, ConfigError, PruneSettings};
use crate::policy::lockfile::LockFile;
use crate::policy::state::State;
use crate::service::in_flight::InFlight;
use crate::service::progress::Unfollowed;
use crate::service::pruner::Pruner;
use crate::service::puller::{PinUpkeep, Puller};
use crate::service::shutdown::Shutdown;

/// A config and the lock it names, both valid and agreeing with each other.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The lock file, when there is one.
    pub lock: Option<LockFile>,
}

/// Loads the config, then the lock file it names (if present), and checks that every image's
/// pin mode can be decided. Every problem of either file is reported in one list, with its
/// location: the cross-checks run on the config as far as it could be read.
pub(crate) fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let (config, mut problems) = Config::load_all(path)?;
    let Some(config) = config else {
        return Err(ConfigError::Invalid { problems });
    };
    let config_valid = problems.is_empty();
    // The cross-checks need a lock that reads.
    let lock = match LockFile::load(&config.lock_file) {
        Ok(lock) => lock,
        Err(lock_problems) => {
            problems.extend(lock_problems);
            return Err(ConfigError::Invalid { problems });
        }
    };
    if let (None, Some(line)) = (&lock, config.require_lock) {
        problems.push(Problem {
            path: config.source.clone(),
            line,
            column: 1,
            message: format!(
                "pin.require_lock: the lock file {} does not exist; run `stowage pin` and ship \
                 it with the config",
                config.lock_file.display()
            ),
        });
    }
    if let Err(pin_problems) = pin_images(&config, lock.as_ref(), None) {
        // A lock entry no image claims may be an image whose entry has a problem of its own:
        // said once the config reads.
        problems.extend(
            pin_problems
                .into_iter()
                .filter(|p| config_valid || p.path != config.lock_file),
        );
    }
    problems.sort_by_key(|p| (p.path != config.source, p.line, p.column));
    if problems.is_empty() {
        Ok(Loaded { config, lock })
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

/// What the runs of one config share.
pub struct Session {
    /// The configuration.
    pub config: Config,
    /// Every required image with its pin mode, in config order.
    pub pinned: Vec<Pinned>,
    /// Where registry credentials come from.
    pub credentials: CredentialSource,
    /// Asks registries for digests.
    pub registry: Box<dyn Registry>,
    /// First-pull pins, the index cache and the usage history.
    pub state: Mutex<State>,
}

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The engine did not say its platform: worth retrying.
    #[error("engine: {0}")]
    Engine(Failure),
    /// The lock cannot serve this host (an index without its platform): a configuration error.
    #[error("{0}")]
    Config(ConfigError),
}

impl Session {
    /// Sets up a session: reads the state file, and asks the engine its platform (what tags
    /// resolve to when the config names none).
    pub async fn new<E: Engine>(
        config: Config,
        lock: Option<LockFile>,
        engine: &E,
    ) -> Result<Session, SessionError> {
        let platform = engine.platform().await.map_err(SessionError::Engine)?;
        let credentials = CredentialSource::new(config.pull.credentials.as_deref());
        let state = State::load(&config.state_file);
        let known = state.index_platforms.clone();
        let insecure = engine.insecure_registries();
        let resolver = Resolver::knowing(
            &config,
            credentials,
            platform,
            known,
            lock.as_ref(),
            insecure,
        );
        Session::with_registry(config, lock, state, Box::new(resolver))
    }

    /// A session over `registry`, for this host's platform as the registry says it.
    pub fn with_registry(
        config: Config,
        lock: Option<LockFile>,
        state: State,
        registry: Box<dyn Registry>,
    ) -> Result<Session, SessionError> {
        // Lock entries of multi-platform indexes pin this host's platform's digest.
        let pinned = pin_images(&config, lock.as_ref(), Some(registry.host_platform()))
            .map_err(|problems| SessionError::Config(ConfigError::Invalid { problems }))?;
        let credentials = CredentialSource::new(config.pull.credentials.as_deref());
        Ok(Session {
            config,
            pinned,
            credentials,
            registry,
            state: Mutex::new(state),
        })
    }

    /// Reads the state file again: what another session saved since this one was set up (the
    /// first-pull pins of a config being replaced, saved while it drained).
    pub fn reread_state(&self) {
        *self.state.locked() = State::load(&self.config.state_file);
    }

    /// A puller over this session, stopping with `stop` and sharing `in_flight` with the pruner.
    pub fn puller<'a, E>(
        &'a self,
        engine: &'a E,
        stop: Shutdown,
        in_flight: InFlight,
        pins: PinUpkeep,
    ) -> Puller<'a, E> {
        Puller {
            engine,
            config: &self.config,
            credentials: &self.credentials,
            registry: self.registry.as_ref(),
            state: &self.state,
            stop,
            in_flight,
            all_pinned: &self.pinned,
            pins,
            window: match pins {
                PinUpkeep::Daemon => self.config.pull.window.as_ref(),
                PinUpkeep::Command => None,
            },
            progress: &Unfollowed,
            verified: Mutex::default(),
            sighted: Mutex::default(),
            save_failed: Mutex::default(),
        }
    }

    /// A pruner over this session, with `settings`, sharing `in_flight` with the pulls (so it
    /// never removes an image being pulled) and stopping with `stop`.
    pub fn pruner<'a, S>(
        &'a self,
        store: &'a S,
        settings: &'a PruneSettings,
        in_flight: InFlight,
        stop: Shutdown,
    ) -> Pruner<'a, S> {
        Pruner {
            store,
            config: &self.config,
            settings,
            pinned: &self.pinned,
            state: &self.state,
            in_flight,
            stop,
            registry: self.registry.as_ref(),
            registry_copies: Mutex::default(),
            credentials: &self.credentials,
            progress: &Unfollowed,
        }
    }

    /// The pinned images refreshed on `schedule` (`None`: `pull.schedule`).
    pub fn pinned_on(&self, schedule: Option<&str>) -> Vec<Pinned> {
        self.pinned
            .iter()
            .filter(|p| p.image.schedule.as_ref().map(|s| s.expr()) == schedule)
            .cloned()
            .collect()
    }
}

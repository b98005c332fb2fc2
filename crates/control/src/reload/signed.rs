//! Signed pinsets (`run --pinset-key`): what the reloader does beyond
//! loading a file.
//!
//! A version of the pinset is read with its `.sig` from one `..data`
//! snapshot ([`policy::load::read`]), its signature and serial checked by
//! [`pinproxy_sign::check`] *before* the file is parsed for use, and only
//! then loaded. When the result is judged, the serial is checked again
//! against the floor as it is at that moment (two loads may run at once;
//! the floor only goes up), the snapshot is swapped in, and the new floor
//! is kept in memory and in `--state-dir`.
//!
//! Keeping the floor on disk can fail (a full or read-only volume). The
//! pinset is applied anyway and the failure logged: the file was verified
//! and is newer than the floor, so refusing it would keep an *older*
//! pinset in force — perhaps the one an emergency update is revoking —
//! for the sake of the record. The floor in memory still protects this
//! process; only a restart would fall back to the floor last written, which
//! is never lower than what an earlier restart had.
//!
//! `--state-dir` is an emptyDir: a new pod starts with no floor and would
//! apply any validly signed serial the Secret holds. `--pinset-min-serial`
//! is the floor every pod starts with; the floor in effect is the higher of
//! it and the one learnt (held or kept), and a serial below it is refused
//! as any rollback is.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use pinproxy_policy::load::{Caps, SignatureError, Source};
use pinproxy_policy::{self as policy, Policy, Signed};
use pinproxy_sign::{Accepted, Floor, KeyRing, Refusal, Serial, Sha256, StateDir, VerifyError};

use super::Error;
use crate::Readiness;

/// The keys a pinset must be signed with, and the rollback floor.
pub struct Signing {
    keys: KeyRing,
    state: Option<StateDir>,
    /// `--pinset-min-serial`: a floor no pod starts without.
    minimum: Option<Serial>,
    floor: Mutex<Held>,
    readiness: Arc<Readiness>,
}

/// The floor as known to this process.
#[derive(Clone, Copy, Debug)]
enum Held {
    /// The floor in effect, the minimum included; `None`: nothing applied
    /// yet, no state kept and no minimum.
    Known(Option<Floor>),
    /// `--state-dir`'s file could not be read: nothing may be applied
    /// until it can (it is read again on every attempt).
    Unknown,
}

/// A pinset that passed its signature and serial checks, loaded.
pub(super) struct Loaded {
    pub(super) policy: Policy,
    pub(super) accepted: Option<Accepted>,
}

/// [`pinproxy_sign::check`] on a pinset and its `.sig` as read (taken
/// out of `source`): a `.sig` that is there but cannot be read — not a
/// regular file, a symlink loop, larger than any signature — is refused as
/// a bad signature, as a missing one is, by the reloader and by
/// `check --key` alike.
pub fn check_signed(
    keys: &KeyRing,
    source: &mut Source,
    floor: Option<&Floor>,
) -> Result<Accepted, Refusal> {
    let signature = std::mem::replace(&mut source.signature, Ok(None)).map_err(|e| {
        Refusal::BadSignature(match e {
            SignatureError::TooLarge { len } => VerifyError::TooLarge { len },
            SignatureError::Read(e) => VerifyError::Unreadable(e),
        })
    })?;
    pinproxy_sign::check(
        keys,
        &source.bytes,
        signature.as_deref(),
        floor,
        policy::load::serial,
    )
}

// === impl Signing ===

impl Signing {
    /// Reads the floor kept in `state` (blocking; at start); `minimum` is
    /// `--pinset-min-serial`. The sidecar is not ready until a signed
    /// pinset is applied: `readiness` says why meanwhile.
    pub fn new(
        keys: KeyRing,
        state: Option<StateDir>,
        minimum: Option<Serial>,
        readiness: Arc<Readiness>,
    ) -> Self {
        readiness.wait_for_pinset("no signed pinset has been loaded yet".into());
        if let Some(m) = minimum {
            tracing::info!(serial = %m, "minimum serial (--pinset-min-serial)");
        }
        let held = match state.as_ref().map(StateDir::load) {
            None => Held::Known(Floor::at_least(None, minimum)),
            Some(Ok(floor)) => {
                if let Some(f) = &floor {
                    tracing::info!(serial = %f.serial(), "rollback floor read from the state directory");
                }
                Held::Known(Floor::at_least(floor, minimum))
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "rollback floor unknown: no pinset is applied");
                readiness.wait_for_pinset(e.to_string());
                Held::Unknown
            }
        };
        Signing {
            keys,
            state,
            minimum,
            floor: Mutex::new(held),
            readiness,
        }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The floor in effect (`None` before any pinset, without a minimum).
    pub fn floor(&self) -> Option<Floor> {
        match *self.lock() {
            Held::Known(f) => f,
            Held::Unknown => Floor::at_least(None, self.minimum),
        }
    }

    pub(super) fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.floor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The floor, reading `--state-dir` again if it was unreadable.
    /// Blocking.
    fn current_floor(&self) -> Result<Option<Floor>, Error> {
        if let Held::Known(f) = *self.lock() {
            return Ok(f);
        }
        let Some(state) = &self.state else {
            return Ok(Floor::at_least(None, self.minimum));
        };
        let floor = Floor::at_least(state.load()?, self.minimum);
        let mut held = self.lock();
        if let Held::Unknown = *held {
            tracing::info!("the rollback state is readable again");
            *held = Held::Known(floor);
        }
        match *held {
            Held::Known(f) => Ok(f),
            Held::Unknown => Ok(floor),
        }
    }

    /// Reads the pinset at `path` and its signature from one version,
    /// checks them against the keys and the floor, and loads the file
    /// (blocking: run off the async workers).
    pub(super) fn load(&self, path: &Path, caps: Caps) -> Result<Loaded, Error> {
        let mut source = policy::load::read(path, caps, true)?;
        let floor = self.current_floor()?;
        let accepted =
            check_signed(&self.keys, &mut source, floor.as_ref()).map_err(|refusal| {
                Error::Refused {
                    path: path.to_path_buf(),
                    sha256: Sha256::of(&source.bytes),
                    refusal: Box::new(refusal),
                }
            })?;
        let mut policy = policy::load::load_source(&source, caps)?;
        // One parser read both; anything else is a bug, and refusing is safe.
        if policy.serial != Some(accepted.serial().get()) {
            return Err(Error::Load(policy::Error::Read {
                path: path.to_path_buf(),
                source: std::io::Error::other("the serial read twice from one file differs"),
            }));
        }
        policy.signature = Some(Signed {
            key: accepted.key().to_string(),
            serial: accepted.serial().get(),
            sha256: accepted.sha256().to_hex(),
        });
        Ok(Loaded {
            policy,
            accepted: Some(accepted),
        })
    }

    /// Whether `accepted` may still replace what is in force now (a newer
    /// load may have raised the floor since it was checked).
    pub(super) fn admit(&self, path: &Path, accepted: &Accepted) -> Result<(), Error> {
        let held = match *self.lock() {
            Held::Known(f) => f,
            Held::Unknown => None,
        };
        let Some(floor) = Floor::at_least(held, self.minimum) else {
            return Ok(());
        };
        floor
            .check(accepted.serial(), accepted.sha256())
            .map_err(|source| Error::Refused {
                path: path.to_path_buf(),
                sha256: *accepted.sha256(),
                refusal: Box::new(Refusal::Rollback {
                    key: accepted.key().clone(),
                    source,
                }),
            })
    }

    /// `accepted` is in force: raise the floor, in memory and (off the
    /// async workers) in `--state-dir`. A failed write is logged; the
    /// pinset stays applied (see the module docs).
    pub(super) async fn advance(&self, accepted: &Accepted) {
        let floor = accepted.floor();
        let raised = {
            let mut held = self.lock();
            let raised = match *held {
                Held::Known(Some(f)) => !f.same_as(&floor),
                _ => true,
            };
            *held = Held::Known(Some(floor));
            raised
        };
        self.readiness.pinset_in_force();
        let Some(state) = self.state.clone().filter(|_| raised) else {
            return;
        };
        let stored = tokio::task::spawn_blocking(move || state.store(&floor)).await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                serial = %floor.serial(),
                "the pinset is applied, but its serial could not be kept: after a restart the \
                 rollback floor is the one last written"
            ),
            Err(e) => tracing::error!(error = %e, "keeping the rollback floor"),
        }
    }
}

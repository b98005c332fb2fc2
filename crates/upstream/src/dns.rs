//! Name resolution, bounded: the [`Resolve`] trait (tests inject their
//! own), the system resolver, and [`Lookups`], which every lookup goes
//! through.
//!
//! getaddrinfo blocks a thread until the resolver answers or glibc gives
//! up (`timeout` × `attempts` × search domains: close to a minute for a
//! black-holed name in a Kubernetes pod), and a timeout on our side drops
//! the future, not the thread. So [`Lookups`] caps the lookups running at
//! once and counts a lookup until its thread returns, whoever still waits
//! for it. A share of the slots is held for hosts the pinset names, so
//! names nobody listed (resolved under `unlisted: deny` only to see whether
//! they fall in a passthrough CIDR) can never starve a pinned host's
//! lookup. Requests for the same name share one lookup in flight. Nothing
//! is cached: an answer serves the requests that waited for it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Name resolution, injectable so tests control every answer (and never
/// ask a real resolver).
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>;
}

/// The system resolver (getaddrinfo on a blocking thread): resolv.conf's
/// search domains and `ndots`, /etc/hosts and nsswitch, as the app's own
/// lookups see them.
#[derive(Debug)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let name = name.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// Which lookup slots a lookup may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Share {
    /// A host the pinset names (a pinned entry, a `passthrough:` name):
    /// any slot, the reserved ones included.
    Listed,
    /// Any other name: only the slots not reserved.
    Unlisted,
}

/// Why a lookup gave no address.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    /// The resolver did not answer in time.
    #[error("DNS lookup timed out")]
    TimedOut,
    /// Every slot this lookup may take stayed busy (`max` lookups in
    /// flight, or the unlisted share of them) until it gave up.
    #[error(
        "DNS lookup timed out waiting for a lookup slot ({max} lookups in flight at most, \
         --max-dns-lookups)"
    )]
    NoSlot { max: usize },
    /// The resolver answered with an error (NXDOMAIN, SERVFAIL, …).
    #[error("DNS lookup failed: {0}")]
    Failed(String),
}

/// Lookups in flight: at most `max` at once, of which unlisted names take
/// at most `max - reserved`; one lookup per (name, share) at a time. Lives
/// as long as the process (across pinset generations): the threads it
/// counts do too.
pub struct Lookups {
    resolver: Arc<dyn Resolve>,
    max: usize,
    /// Slots anyone may take.
    common: Arc<Semaphore>,
    /// Slots only [`Share::Listed`] lookups may take.
    reserved: Arc<Semaphore>,
    pending: Mutex<HashMap<Key, Arc<watch::Sender<State>>>>,
}

type Key = (String, Share);

/// Where a lookup in flight is; its waiters watch it.
#[derive(Clone, Debug)]
enum State {
    /// Waiting for a slot.
    Queued,
    /// Asking the resolver.
    Running,
    Done(Result<Vec<SocketAddr>, LookupError>),
}

/// A lookup's place in [`Lookups::pending`], given up however its task
/// ends (a panicking resolver included), so a name is never stuck.
struct Entry {
    lookups: Arc<Lookups>,
    key: Key,
    tx: Arc<watch::Sender<State>>,
}

// === impl Lookups ===

impl Lookups {
    /// The default cap: 32 lookups in flight.
    pub const DEFAULT_MAX: usize = 32;

    /// At most `max` lookups in flight (2 at least); a quarter of them
    /// (1 at least) held for [`Share::Listed`].
    pub fn new(resolver: Arc<dyn Resolve>, max: usize) -> Self {
        let max = max.max(2);
        let reserved = (max / 4).max(1);
        Self {
            resolver,
            max,
            common: Arc::new(Semaphore::new(max - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            pending: Mutex::default(),
        }
    }

    /// The cap on lookups in flight.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Lookups holding a slot now: asking the resolver, or abandoned by
    /// every waiter and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.max - self.common.available_permits() - self.reserved.available_permits()
    }

    /// `name`'s addresses (with `port`), taking a slot of `share`, within
    /// `within` (waiting for a slot included). A lookup of the same name
    /// and share already in flight is joined, not repeated. Giving up
    /// frees nothing: the lookup keeps its slot until the resolver
    /// returns, so the cap bounds the threads getaddrinfo holds.
    pub async fn lookup(
        self: &Arc<Self>,
        name: &str,
        port: u16,
        share: Share,
        within: Duration,
    ) -> Result<Vec<SocketAddr>, LookupError> {
        let mut rx = self.join(name, port, share, within);
        let done = tokio::time::timeout(within, async {
            match rx.wait_for(|s| matches!(s, State::Done(_))).await {
                Ok(state) => state.clone(),
                // Only if the task died without an answer (a resolver
                // panicked): no answer is coming.
                Err(_) => State::Done(Err(LookupError::Failed("the lookup was abandoned".into()))),
            }
        })
        .await;
        match done {
            Ok(State::Done(Ok(mut addrs))) => {
                // Joined a lookup made for another port.
                for a in &mut addrs {
                    a.set_port(port);
                }
                Ok(addrs)
            }
            Ok(State::Done(Err(e))) => Err(e),
            Ok(_) => Err(LookupError::TimedOut),
            Err(_) => match *rx.borrow() {
                State::Queued => Err(LookupError::NoSlot { max: self.max }),
                _ => Err(LookupError::TimedOut),
            },
        }
    }

    /// Watches the lookup of (`name`, `share`) in flight, starting one
    /// (on its own task, which gives up waiting for a slot after
    /// `within`) if there is none.
    fn join(
        self: &Arc<Self>,
        name: &str,
        port: u16,
        share: Share,
        within: Duration,
    ) -> watch::Receiver<State> {
        let key = (name.to_string(), share);
        let mut pending = self.pending();
        if let Some(tx) = pending.get(&key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(State::Queued);
        let tx = Arc::new(tx);
        pending.insert(key.clone(), tx.clone());
        drop(pending);
        let entry = Entry {
            lookups: self.clone(),
            key,
            tx,
        };
        tokio::spawn(entry.run(port, within));
        rx
    }

    /// A slot for `share`: a listed lookup takes whichever frees first.
    async fn slot(&self, share: Share) -> OwnedSemaphorePermit {
        let common = self.common.clone().acquire_owned();
        let permit = match share {
            Share::Unlisted => common.await,
            Share::Listed => {
                tokio::select! {
                    biased;
                    p = self.reserved.clone().acquire_owned() => p,
                    p = common => p,
                }
            }
        };
        permit.expect("the lookup semaphores are never closed")
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<Key, Arc<watch::Sender<State>>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("resolver", &self.resolver)
            .field("max", &self.max)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

// === impl Entry ===

impl Entry {
    /// Waits up to `within` for a slot, asks the resolver (for `port`)
    /// holding it until it returns, and tells every waiter.
    async fn run(self, port: u16, within: Duration) {
        let lookups = self.lookups.clone();
        let Ok(permit) = tokio::time::timeout(within, lookups.slot(self.key.1)).await else {
            self.finish(Err(LookupError::NoSlot { max: lookups.max }));
            return;
        };
        {
            // Everyone who wanted it gave up while it was queued: spend
            // no thread on it. Checked under the lock joiners take.
            let mut pending = lookups.pending();
            if self.tx.receiver_count() == 0 {
                pending.remove(&self.key);
                return;
            }
        }
        self.tx.send_replace(State::Running);
        let answer = match lookups.resolver.resolve(&self.key.0, port).await {
            Ok(addrs) => Ok(addrs),
            Err(e) => Err(LookupError::Failed(e.to_string())),
        };
        drop(permit);
        self.finish(answer);
    }

    /// Hands `answer` to the waiters and leaves the table, so the next
    /// request for the name asks again.
    fn finish(&self, answer: Result<Vec<SocketAddr>, LookupError>) {
        let mut pending = self.lookups.pending();
        self.tx.send_replace(State::Done(answer));
        self.leave(&mut pending);
    }

    fn leave(&self, pending: &mut HashMap<Key, Arc<watch::Sender<State>>>) {
        if pending
            .get(&self.key)
            .is_some_and(|tx| Arc::ptr_eq(tx, &self.tx))
        {
            pending.remove(&self.key);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut pending = self.lookups.pending();
        self.leave(&mut pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers `pinned.test` at once; never answers a name under
    /// `slow.test` (a black-holed domain); counts the lookups it was asked.
    #[derive(Debug, Default)]
    struct Hang {
        asked: AtomicUsize,
    }

    impl Resolve for Hang {
        fn resolve(
            &self,
            name: &str,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let hang = name.ends_with(".slow.test");
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            })
        }
    }

    const WITHIN: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn hanging_unlisted_lookups_neither_delay_a_listed_one_nor_grow_past_the_cap() {
        let hang = Arc::new(Hang::default());
        let lookups = Arc::new(Lookups::new(hang.clone(), 8));
        let t0 = tokio::time::Instant::now();
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..200 {
            let l = lookups.clone();
            flood.spawn(async move {
                l.lookup(&format!("n{i}.slow.test"), 443, Share::Unlisted, WITHIN)
                    .await
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The unlisted share: 8 less a quarter.
        assert_eq!(lookups.in_flight(), 6);
        assert_eq!(hang.asked.load(Ordering::SeqCst), 6);

        let start = tokio::time::Instant::now();
        let addrs = lookups
            .lookup("pinned.test", 8443, Share::Listed, WITHIN)
            .await
            .expect("a listed lookup gets a reserved slot");
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 8443))]);
        assert_eq!(start.elapsed(), Duration::ZERO, "not delayed by the flood");

        // The flood gives up after `WITHIN`: the queued ones for want of a
        // slot, the six running ones on the resolver.
        let mut why = HashMap::new();
        while let Some(r) = flood.join_next().await {
            let e = r.expect("no panic").expect_err("black-holed");
            *why.entry(e.to_string()).or_insert(0) += 1;
        }
        assert_eq!(t0.elapsed(), WITHIN);
        // (The queued lookups' own tasks give up at the same instant.)
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(why.get("DNS lookup timed out"), Some(&6), "{why:?}");
        assert_eq!(
            why.get(
                "DNS lookup timed out waiting for a lookup slot (8 lookups in flight at most, \
                 --max-dns-lookups)"
            ),
            Some(&194),
            "{why:?}"
        );
        // The six threads still hang (they are never abandoned), and the
        // 194 names given up on never reached the resolver (the seventh
        // lookup asked was pinned.test's).
        assert_eq!(lookups.in_flight(), 6);
        assert_eq!(hang.asked.load(Ordering::SeqCst), 7);
        assert_eq!(lookups.pending().len(), 6);

        // Still: listed names get the reserved slots, unlisted ones none.
        lookups
            .lookup("pinned.test", 443, Share::Listed, WITHIN)
            .await
            .expect("reserved");
        let e = lookups
            .lookup("other.test", 443, Share::Unlisted, WITHIN)
            .await
            .expect_err("no unlisted slot");
        assert!(matches!(e, LookupError::NoSlot { max: 8 }), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_for_one_black_holed_name_cost_one_lookup() {
        let hang = Arc::new(Hang::default());
        let lookups = Arc::new(Lookups::new(hang.clone(), 32));
        let mut set = tokio::task::JoinSet::new();
        for port in 0..500u16 {
            let l = lookups.clone();
            set.spawn(async move {
                l.lookup("same.slow.test", port, Share::Unlisted, WITHIN)
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            let e = r.expect("no panic").expect_err("black-holed");
            assert!(matches!(e, LookupError::TimedOut), "{e:?}");
        }
        assert_eq!(hang.asked.load(Ordering::SeqCst), 1);
        assert_eq!(lookups.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_joined_answer_carries_each_callers_port_and_is_not_kept() {
        let hang = Arc::new(Hang::default());
        let lookups = Arc::new(Lookups::new(hang.clone(), 4));
        let (a, b) = tokio::join!(
            lookups.lookup("pinned.test", 443, Share::Listed, WITHIN),
            lookups.lookup("pinned.test", 8443, Share::Listed, WITHIN),
        );
        assert_eq!(a.expect("answered")[0].port(), 443);
        assert_eq!(b.expect("answered")[0].port(), 8443);
        assert_eq!(hang.asked.load(Ordering::SeqCst), 1);
        // Answered: the next request asks again, and nothing is held.
        lookups
            .lookup("pinned.test", 443, Share::Listed, WITHIN)
            .await
            .expect("answered");
        assert_eq!(hang.asked.load(Ordering::SeqCst), 2);
        assert_eq!(lookups.in_flight(), 0);
        assert!(lookups.pending().is_empty());
    }
}

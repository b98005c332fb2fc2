//! Connection slots, and who gives one up when they are all taken.
//!
//! Any pod in the cluster can connect to the webhook, and a connection that
//! never sends a byte used to hold one of the [`Limits::max_connections`]
//! slots until its TLS handshake timed out: 400 such connections from one
//! client made three of four API-server calls time out. The API server
//! finishes its handshake in milliseconds and then sends its review at
//! once, so a connection still in its handshake, or past it without having
//! sent a request head, is the cheapest thing to lose: when every slot is
//! taken, a new connection is accepted and the idle connection idle the
//! longest is closed to make room. A new connection from the API server
//! stays idle only for its milliseconds of handshake, so it is the last,
//! not the first, to go when room is made.
//!
//! Only a connection idle for at least [`GRACE`] is closed for room: a
//! client that reconnects at once whenever it is closed would otherwise
//! cycle through all the slots faster than a handshake takes, closing the
//! API server's new connection too. With the grace, every connection gets
//! that long to send its request, and the accept queue still drains at
//! `max_connections` per `GRACE` (256 a second by default) past any number
//! of idle clients.
//!
//! One source address may hold at most [`PER_SOURCE`] idle connections: a
//! new one past that closes the same address's longest idle connection (once
//! past its grace) or, if all of them are younger, is closed itself at once.
//! So one client reconnecting as fast as it can holds a few slots and
//! keeps the accept queue moving (the kernel's queue holds only 128: once
//! it overflows, everyone's SYNs are dropped and retried seconds later),
//! instead of filling the slots and the queue for the API server.
//!
//! A connection is idle whenever no request is in flight on it: before its
//! first request, and between requests on a connection kept alive (a
//! client that sent one cheap `GET /healthz` on each of its connections and
//! kept them open held every slot for good, HTTP/2 ones as long as it
//! answered pings). A request in flight (its head parsed, until its answer
//! is ready) is never cut: it is bounded by the body timeout and budget
//! instead, and its connection becomes idle — closable after [`GRACE`],
//! time enough to write the answer — when its last request is answered.
//! When every slot holds a request in flight, new connections wait in the
//! kernel's accept queue as before.
//!
//! [`Limits::max_connections`]: super::Limits::max_connections

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// How long a connection may stay idle before it can be closed for room.
/// The API server completes its handshake and sends its review within
/// milliseconds, tens through a managed control plane's tunnel.
pub(super) const GRACE: Duration = Duration::from_millis(500);

/// Idle connections one source address may hold. The API server multiplexes
/// its reviews over HTTP/2 and opens a few connections at most, each idle
/// for milliseconds.
pub(super) const PER_SOURCE: usize = 16;

/// The slots of one server.
pub(super) struct Slots {
    max: usize,
    state: Mutex<State>,
    /// A slot was given back.
    freed: Notify,
}

struct State {
    next: u64,
    /// Open connections by age (ids grow).
    open: BTreeMap<u64, Open>,
}

struct Open {
    source: IpAddr,
    /// Requests in flight on it.
    in_flight: usize,
    /// Idle (no request in flight) since when; `None` while serving.
    idle: Option<Instant>,
    /// Closes the connection when it is evicted.
    close: oneshot::Sender<()>,
}

/// What a new connection can have now.
enum Room {
    Free,
    /// By closing this idle connection.
    Evict(u64),
    /// Nothing until a slot is given back, or this instant (when the longest
    /// idle connection has been idle for [`GRACE`]).
    Wait(Option<Instant>),
}

/// One connection's slot, given back when dropped.
pub(super) struct Slot {
    id: u64,
    slots: Arc<Slots>,
}

/// Resolves when the connection is closed to make room for a newer one.
pub(super) struct Evicted(oneshot::Receiver<()>);

// === impl Slots ===

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            state: Mutex::new(State {
                next: 0,
                open: BTreeMap::new(),
            }),
            freed: Notify::new(),
        })
    }

    /// Waits until a new connection could be given a slot: one is free, or
    /// an idle connection could make room. Until then, new connections wait
    /// in the kernel's accept queue and cost nothing.
    pub(super) async fn ready(&self) {
        loop {
            let freed = self.freed.notified();
            let until = match self.room(&self.lock()) {
                Room::Free | Room::Evict(_) => return,
                Room::Wait(until) => until,
            };
            wait(freed, until).await;
        }
    }

    /// A slot for a connection just accepted from `source`, closing the
    /// longest idle connection if none is free. If no connection is idle any
    /// more (they sent requests since [`Slots::ready`]), waits for a slot
    /// to be given back. `None`: `source` holds [`PER_SOURCE`] idle
    /// connections, all within their grace; close this one.
    pub(super) async fn admit(self: &Arc<Self>, source: IpAddr) -> Option<(Slot, Evicted)> {
        {
            let mut state = self.lock();
            let theirs = state
                .open
                .iter()
                .filter(|(_, o)| o.source == source && o.idle.is_some());
            if theirs.clone().count() >= PER_SOURCE {
                return match longest_idle(theirs) {
                    Some((id, since)) if since.elapsed() >= GRACE => {
                        Self::evict(&mut state, id);
                        Some(self.take(&mut state, source))
                    }
                    _ => None,
                };
            }
        }
        loop {
            let freed = self.freed.notified();
            let until = {
                let mut state = self.lock();
                match self.room(&state) {
                    Room::Free => return Some(self.take(&mut state, source)),
                    Room::Evict(id) => {
                        Self::evict(&mut state, id);
                        tracing::debug!("all connection slots taken; closed the longest idle one");
                        return Some(self.take(&mut state, source));
                    }
                    Room::Wait(until) => until,
                }
            };
            wait(freed, until).await;
        }
    }

    fn evict(state: &mut State, id: u64) {
        if let Some(open) = state.open.remove(&id) {
            // Its task may already be ending: nothing to close.
            let _ = open.close.send(());
        }
    }

    fn room(&self, state: &State) -> Room {
        if state.open.len() < self.max {
            return Room::Free;
        }
        // The one idle longest: not the oldest opened, which may have been
        // answered a moment ago (a connection kept alive is idle again
        // after each answer) while others have been idle for long.
        match longest_idle(state.open.iter()) {
            Some((id, since)) if since.elapsed() >= GRACE => Room::Evict(id),
            Some((_, since)) => Room::Wait(Some(since + GRACE)),
            None => Room::Wait(None),
        }
    }

    fn take(self: &Arc<Self>, state: &mut State, source: IpAddr) -> (Slot, Evicted) {
        let id = state.next;
        state.next += 1;
        let (close, closed) = oneshot::channel();
        state.open.insert(
            id,
            Open {
                source,
                in_flight: 0,
                idle: Some(Instant::now()),
                close,
            },
        );
        (
            Slot {
                id,
                slots: self.clone(),
            },
            Evicted(closed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map half-changed
        // in a way that matters: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Of `open`, the connection idle the longest, and since when.
fn longest_idle<'a>(open: impl Iterator<Item = (&'a u64, &'a Open)>) -> Option<(u64, Instant)> {
    open.filter_map(|(id, o)| Some((*id, o.idle?)))
        .min_by_key(|&(id, since)| (since, id))
}

async fn wait(freed: tokio::sync::futures::Notified<'_>, until: Option<Instant>) {
    match until {
        Some(at) => {
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep_until(at) => {}
            }
        }
        None => freed.await,
    }
}

// === impl Slot ===

impl Slot {
    /// A request on this connection is being served: it is not closed for
    /// room until the returned guard is dropped (its answer ready) and no
    /// other request is in flight.
    pub(super) fn serving(self: &Arc<Self>) -> Serving {
        if let Some(open) = self.slots.lock().open.get_mut(&self.id) {
            open.in_flight += 1;
            open.idle = None;
        }
        Serving(self.clone())
    }
}

/// One request in flight on a connection ([`Slot::serving`]).
pub(super) struct Serving(Arc<Slot>);

impl Drop for Serving {
    fn drop(&mut self) {
        let slot = &self.0;
        let mut state = slot.slots.lock();
        if let Some(open) = state.open.get_mut(&slot.id) {
            open.in_flight = open.in_flight.saturating_sub(1);
            if open.in_flight == 0 {
                open.idle = Some(Instant::now());
                drop(state);
                // Room may be made from it once its grace has passed.
                slot.slots.freed.notify_one();
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().open.remove(&self.id);
        self.slots.freed.notify_one();
    }
}

// === impl Evicted ===

impl Evicted {
    /// Resolves if, and only if, the connection is to be closed for room
    /// (never while a request is in flight on it, [`Slot::serving`]).
    pub(super) async fn wait(self) {
        if self.0.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f`'s output if it is ready at its first poll.
    async fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            v = f => Some(v),
            () = std::future::ready(()) => None,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let slots = Slots::new(3);
        let (first, first_out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (second, second_out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (third, third_out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (first, third) = (Arc::new(first), Arc::new(third));
        let first_serving = first.serving();
        // Full; two are idle, but not yet for the grace period.
        assert!(now(slots.ready()).await.is_none());
        tokio::time::advance(GRACE).await;
        assert!(now(slots.ready()).await.is_some());
        let (_fourth, _) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        assert!(
            now(second_out.wait()).await.is_some(),
            "the oldest idle one goes"
        );
        let mut third_out = std::pin::pin!(third_out.wait());
        assert!(now(third_out.as_mut()).await.is_none());
        let mut first_out = std::pin::pin!(first_out.wait());
        assert!(now(first_out.as_mut()).await.is_none(), "busy: kept");
        let third_serving = third.serving();
        // Full of busy connections and one young idle one: wait.
        assert!(now(slots.ready()).await.is_none());
        drop(second);
        assert!(
            now(slots.ready()).await.is_none(),
            "the evicted slot was already reused"
        );
        drop((first_serving, first));
        assert!(now(slots.ready()).await.is_some());
        assert!(
            now(first_out).await.is_none(),
            "a slot given back is not an eviction"
        );
        drop(third_serving);
    }

    /// A connection kept alive after its answer is idle again: once past
    /// the grace it makes room (a client that sent one `GET /healthz` on
    /// each connection and kept them all open held every slot for good);
    /// one with a request still in flight never does.
    #[tokio::test(start_paused = true)]
    async fn a_served_connection_kept_alive_is_idle_again() {
        let slots = Slots::new(2);
        let (kept, kept_out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (long, long_out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (kept, long) = (Arc::new(kept), Arc::new(long));
        let answered = kept.serving();
        let _in_flight = long.serving();
        drop(answered);
        // Answered just now: within its grace, time to write the answer.
        assert!(now(slots.ready()).await.is_none());
        tokio::time::advance(GRACE).await;
        assert!(now(slots.ready()).await.is_some());
        let (new, _) = now(slots.admit(ip(2))).await.unwrap().unwrap();
        assert!(
            now(kept_out.wait()).await.is_some(),
            "the kept-alive one goes"
        );
        let mut long_out = std::pin::pin!(long_out.wait());
        assert!(now(long_out.as_mut()).await.is_none(), "in flight: kept");
        // Two requests at once: idle only after both.
        drop((kept, new));
        let (two, two_out) = now(slots.admit(ip(3))).await.unwrap().unwrap();
        let two = Arc::new(two);
        let (a, b) = (two.serving(), two.serving());
        drop(a);
        tokio::time::advance(GRACE).await;
        let mut two_out = std::pin::pin!(two_out.wait());
        assert!(now(slots.ready()).await.is_none(), "one still in flight");
        assert!(now(two_out.as_mut()).await.is_none());
        drop(b);
        tokio::time::advance(GRACE).await;
        assert!(now(slots.ready()).await.is_some());
    }

    /// The connection idle the longest makes room, not the oldest opened:
    /// one answered a moment ago (kept alive, idle again) must not hide
    /// another idle far past the grace (the final review's case: the
    /// oldest connection sending a request every 400 ms held off every
    /// eviction).
    #[tokio::test(start_paused = true)]
    async fn the_connection_idle_longest_makes_room() {
        let slots = Slots::new(2);
        let (old, old_out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (_young, young_out) = now(slots.admit(ip(2))).await.unwrap().unwrap();
        let old = Arc::new(old);
        tokio::time::advance(GRACE * 4).await;
        drop(old.serving());
        assert!(now(slots.ready()).await.is_some(), "the other is long idle");
        let _new = now(slots.admit(ip(3))).await.unwrap().unwrap();
        assert!(now(young_out.wait()).await.is_some(), "idle longest: goes");
        let mut old_out = std::pin::pin!(old_out.wait());
        assert!(now(old_out.as_mut()).await.is_none(), "just answered: kept");
        // The same within one source's share.
        let slots = Slots::new(128);
        let mut mine = Vec::new();
        for _ in 0..PER_SOURCE {
            let (s, out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
            mine.push((Arc::new(s), out));
        }
        tokio::time::advance(GRACE * 4).await;
        drop(mine[0].0.serving());
        let _new = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let (_, second_out) = mine.remove(1);
        assert!(now(second_out.wait()).await.is_some());
    }

    /// `ready` wakes by itself when the oldest idle connection comes of age.
    #[tokio::test(start_paused = true)]
    async fn room_is_made_once_the_grace_period_passes() {
        let slots = Slots::new(1);
        let (_only, out) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        let started = Instant::now();
        slots.ready().await;
        assert_eq!(started.elapsed(), GRACE);
        let (_new, _) = now(slots.admit(ip(1))).await.unwrap().unwrap();
        assert!(now(out.wait()).await.is_some());
    }

    /// One address past its share closes its own oldest idle connection,
    /// or, within the grace, the new one; others are not affected.
    #[tokio::test(start_paused = true)]
    async fn one_source_holds_a_few_idle_slots() {
        let slots = Slots::new(128);
        let mut mine = Vec::new();
        for _ in 0..PER_SOURCE {
            mine.push(now(slots.admit(ip(1))).await.unwrap().unwrap());
        }
        assert!(now(slots.admit(ip(1))).await.unwrap().is_none());
        assert!(now(slots.admit(ip(2))).await.unwrap().is_some());
        tokio::time::advance(GRACE).await;
        let (_first, first_out) = mine.remove(0);
        let _new = now(slots.admit(ip(1))).await.unwrap().unwrap();
        assert!(now(first_out.wait()).await.is_some());
        // Connections with a request in flight do not count.
        let mine: Vec<Arc<Slot>> = mine.into_iter().map(|(s, _)| Arc::new(s)).collect();
        let _serving: Vec<Serving> = mine.iter().map(|s| s.serving()).collect();
        assert!(now(slots.admit(ip(1))).await.unwrap().is_some());
    }
}

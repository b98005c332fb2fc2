//! Connection slots, and who gives one up when they are all taken.
//!
//! Any pod in the cluster can connect to the webhook, and a connection that
//! never sends a byte used to hold one of the [`Limits::max_connections`]
//! slots until its TLS handshake timed out: 400 such connections from one
//! client made three of four API-server calls time out. The API server
//! finishes its handshake in milliseconds and then sends its review at
//! once, so a connection still in its handshake, or past it without having
//! sent a request head, is the cheapest thing to lose: when every slot is
//! taken, a new connection is accepted and the *oldest* such idle
//! connection is closed to make room. A new connection from the API server
//! stays idle only for its milliseconds of handshake, so it is the newest,
//! not the oldest, when room is made.
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
//! new one past that closes the same address's oldest idle connection (once
//! past its grace) or, if all of them are younger, is closed itself at once.
//! So one client reconnecting as fast as it can holds a few slots and
//! keeps the accept queue moving (the kernel's queue holds only 128: once
//! it overflows, everyone's SYNs are dropped and retried seconds later),
//! instead of filling the slots and the queue for the API server.
//!
//! A connection that has sent a request (its head parsed, the body perhaps
//! still arriving) is never closed for room: it is bounded by the body
//! timeout and budget instead. When every slot holds such a connection, new
//! connections wait in the kernel's accept queue as before.
//!
//! Residual: a client that sends one cheap request per connection (`GET
//! /healthz`) and then keeps it open is not evictable; HTTP/1 keep-alive
//! is bounded by the request-head timeout, HTTP/2 only by the client.
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
    /// Still idle: since when, and the sender that closes it. `None`: it
    /// has sent a request.
    idle: Option<(Instant, oneshot::Sender<()>)>,
}

/// What a new connection can have now.
enum Room {
    Free,
    /// By closing this idle connection.
    Evict(u64),
    /// Nothing until a slot is given back, or this instant (when the oldest
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
    /// oldest idle connection if none is free. If no connection is idle any
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
                let oldest = theirs.map(|(id, o)| (*id, o.idle.as_ref().map(|i| i.0)));
                return match oldest.take(1).next() {
                    Some((id, Some(since))) if since.elapsed() >= GRACE => {
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
                        tracing::debug!("all connection slots taken; closed the oldest idle one");
                        return Some(self.take(&mut state, source));
                    }
                    Room::Wait(until) => until,
                }
            };
            wait(freed, until).await;
        }
    }

    fn evict(state: &mut State, id: u64) {
        if let Some(Open {
            idle: Some((_, close)),
            ..
        }) = state.open.remove(&id)
        {
            // Its task may already be ending: nothing to close.
            let _ = close.send(());
        }
    }

    fn room(&self, state: &State) -> Room {
        if state.open.len() < self.max {
            return Room::Free;
        }
        // Ids grow with age: the first idle one is the oldest.
        match state
            .open
            .iter()
            .find_map(|(id, o)| Some((*id, o.idle.as_ref()?.0)))
        {
            Some((id, since)) if since.elapsed() >= GRACE => Room::Evict(id),
            Some((_, since)) => Room::Wait(Some(since + GRACE)),
            None => Room::Wait(None),
        }
    }

    fn take(self: &Arc<Self>, state: &mut State, source: IpAddr) -> (Slot, Evicted) {
        let id = state.next;
        state.next += 1;
        let (close, closed) = oneshot::channel();
        let idle = Some((Instant::now(), close));
        state.open.insert(id, Open { source, idle });
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
    /// The connection has sent a request: no longer closed for room.
    pub(super) fn busy(&self) {
        if let Some(open) = self.slots.lock().open.get_mut(&self.id) {
            open.idle = None;
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
    /// (a connection marked [`Slot::busy`] never is).
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
        first.busy();
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
        third.busy();
        // Full of busy connections and one young idle one: wait.
        assert!(now(slots.ready()).await.is_none());
        drop(second);
        assert!(
            now(slots.ready()).await.is_none(),
            "the evicted slot was already reused"
        );
        drop(first);
        assert!(now(slots.ready()).await.is_some());
        assert!(
            now(first_out).await.is_none(),
            "a slot given back is not an eviction"
        );
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
        // Busy connections do not count.
        for (slot, _) in &mine {
            slot.busy();
        }
        assert!(now(slots.admit(ip(1))).await.unwrap().is_some());
    }
}

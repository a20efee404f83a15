//! Who gets a connection, and when one is idle.
//!
//! - **Handshakes have their own, smaller allowance**: at most
//!   [`MAX_HANDSHAKES`] in progress in all and [`MAX_HANDSHAKES_PER_PEER`]
//!   from one address. A connection over either is let in by ending the
//!   oldest handshake in its way (of that address, else of all), so sockets
//!   that never finish a handshake can delay a newcomer by one handshake at
//!   most, never take the places of authenticated connections, and never
//!   hold more than the allowance of file descriptors. A connection keeps
//!   its slot until it has a place, so connections waiting for one are
//!   bounded the same way.
//! - **Places** (`--max-connections`) are taken after the handshake, by
//!   clients that proved who they are. When every place is taken, the
//!   connection idle the longest is closed gracefully to make room; with
//!   none idle, the newcomer waits up to [`PLACE_WAIT`] and is then closed.
//! - **Idle means no request in flight** ([`Activity`]): a request counts
//!   from the service call until hyper lets go of its response body, so an
//!   HTTP/2 connection that only answers PINGs is idle, and a GET waiting
//!   on `?wait=` is not. A connection with a response in flight that writes
//!   nothing for the response deadline is ended (its streams reset), so a
//!   client that stops reading cannot hold responses for ever.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Handshakes in progress at once, in all. Far above a sidecar's bursts (a
/// handshake takes about a millisecond of CPU), far below the places.
pub const MAX_HANDSHAKES: usize = 256;

/// Handshakes in progress at once from one peer address: a quarter of the
/// allowance, so one address cannot take it all, and enough for a node's
/// pods behind one SNAT address reconnecting together.
pub const MAX_HANDSHAKES_PER_PEER: usize = 64;

/// How long an authenticated connection waits for a place when none is
/// idle.
pub const PLACE_WAIT: Duration = Duration::from_secs(5);

/// How often a connection waiting for a place looks for an idle one again.
const PLACE_RETRY: Duration = Duration::from_millis(100);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a few map operations: consistent even after a
    // panic elsewhere.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The allowance, the places and the connections holding them.
pub struct Admission {
    places: Arc<Semaphore>,
    handshakes: Mutex<Handshakes>,
    /// Established connections by id: what each is doing, and how to tell
    /// it to close.
    placed: Mutex<HashMap<u64, Placed>>,
    next_id: AtomicU64,
}

type Placed = (Arc<Activity>, Arc<Notify>);

#[derive(Default)]
struct Handshakes {
    /// By id, which grows with time: the first is the oldest.
    order: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    per_peer: HashMap<IpAddr, usize>,
}

impl Handshakes {
    fn remove(&mut self, id: u64) -> Option<Arc<Notify>> {
        let (peer, cancel) = self.order.remove(&id)?;
        if let Some(count) = self.per_peer.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
        }
        Some(cancel)
    }
}

impl Admission {
    /// `places` connections may be established at once.
    pub fn new(places: usize) -> Admission {
        Admission {
            places: Arc::new(Semaphore::new(places)),
            handshakes: Mutex::new(Handshakes::default()),
            placed: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// A handshake slot for a connection from `peer`, ending the oldest
    /// handshake in the way when the allowance is used up.
    pub fn begin_handshake(self: &Arc<Self>, peer: IpAddr) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Notify::new());
        let evicted = {
            let mut table = lock(&self.handshakes);
            let mut evicted = Vec::new();
            if table.per_peer.get(&peer).copied().unwrap_or(0) >= MAX_HANDSHAKES_PER_PEER {
                let oldest = table
                    .order
                    .iter()
                    .find(|(_, (from, _))| *from == peer)
                    .map(|(id, _)| *id);
                evicted.extend(oldest.and_then(|oldest| table.remove(oldest)));
            }
            if table.order.len() >= MAX_HANDSHAKES {
                let oldest = table.order.keys().next().copied();
                evicted.extend(oldest.and_then(|oldest| table.remove(oldest)));
            }
            table.order.insert(id, (peer, Arc::clone(&cancel)));
            *table.per_peer.entry(peer).or_insert(0) += 1;
            evicted
        };
        for cancel in evicted {
            // `notify_one` keeps the wake-up for a waiter that comes later.
            cancel.notify_one();
        }
        Slot {
            id,
            cancel,
            admission: Arc::clone(self),
        }
    }

    /// A place for an authenticated connection: at once if one is free,
    /// else after closing the connection idle the longest; `None` when none
    /// frees up within [`PLACE_WAIT`].
    pub async fn place(self: &Arc<Self>, activity: Arc<Activity>) -> Option<Place> {
        let give_up = Instant::now() + PLACE_WAIT;
        let permit = loop {
            if let Ok(permit) = Arc::clone(&self.places).try_acquire_owned() {
                break permit;
            }
            // Again each round: a busy connection may have gone idle since.
            self.close_longest_idle();
            let round = PLACE_RETRY.min(give_up.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(round, Arc::clone(&self.places).acquire_owned()).await {
                Ok(Ok(permit)) => break permit,
                Ok(Err(_)) => return None, // the semaphore is never closed
                Err(_) if Instant::now() >= give_up => return None,
                Err(_) => {}
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        lock(&self.placed).insert(id, (activity, Arc::clone(&evict)));
        Some(Place {
            id,
            evict,
            admission: Arc::clone(self),
            _permit: permit,
        })
    }

    fn close_longest_idle(&self) {
        let placed = lock(&self.placed);
        let longest = placed
            .values()
            .filter_map(|(activity, evict)| activity.idle_since().map(|since| (since, evict)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, evict)) = longest {
            evict.notify_one();
        }
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        lock(&self.handshakes).order.len()
    }
}

/// A handshake's place in the allowance; given back when dropped.
pub struct Slot {
    id: u64,
    cancel: Arc<Notify>,
    admission: Arc<Admission>,
}

impl Slot {
    /// Resolves when a newer connection has taken this slot.
    pub async fn evicted(&self) {
        self.cancel.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.admission.handshakes).remove(self.id);
    }
}

/// An established connection's place; given back when dropped.
pub struct Place {
    id: u64,
    evict: Arc<Notify>,
    admission: Arc<Admission>,
    _permit: OwnedSemaphorePermit,
}

impl Place {
    /// Resolves when the connection should close to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.admission.placed).remove(&self.id);
    }
}

/// What a connection is doing, for the idle and response deadlines. Times
/// are milliseconds since the connection's start.
pub struct Activity {
    start: Instant,
    /// Requests from the service call until hyper drops the response body.
    in_flight: AtomicUsize,
    /// Of those, the ones whose response is being sent (the service has
    /// answered): only these can stall.
    delivering: AtomicUsize,
    /// When the last request ended (or the connection started).
    quiet_ms: AtomicU64,
    /// When the connection last wrote a byte or began a request.
    progress_ms: AtomicU64,
}

/// Why a connection's deadline has passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// No request in flight for the idle timeout.
    Idle,
    /// Requests in flight, and nothing written for the response deadline.
    Stalled,
}

impl Activity {
    /// A connection starting now.
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            delivering: AtomicUsize::new(0),
            quiet_ms: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: &AtomicU64) -> Instant {
        self.start + Duration::from_millis(ms.load(Ordering::Relaxed))
    }

    /// A byte was written.
    pub fn wrote(&self) {
        self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request begins; it is in flight until the returned guard (moved
    /// into its response body) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: Arc::clone(self),
            delivering: false,
        }
    }

    /// Since when no request has been in flight, if none is.
    pub fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.at(&self.quiet_ms))
    }

    /// When the connection's deadline passes as things stand, and why;
    /// none while requests are only being handled (a GET waiting on
    /// `?wait=`, a body arriving: those have deadlines of their own).
    pub fn deadline(&self, idle: Duration, response: Duration) -> Option<(Instant, Expired)> {
        if let Some(since) = self.idle_since() {
            return Some((since + idle, Expired::Idle));
        }
        (self.delivering.load(Ordering::Acquire) > 0)
            .then(|| (self.at(&self.progress_ms) + response, Expired::Stalled))
    }

    /// The deadline that has passed, if any.
    pub fn expired(&self, idle: Duration, response: Duration) -> Option<Expired> {
        let (at, why) = self.deadline(idle, response)?;
        (at <= Instant::now()).then_some(why)
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

/// One request in flight; ends it when dropped.
pub struct InFlight {
    activity: Arc<Activity>,
    delivering: bool,
}

impl InFlight {
    /// The service has answered: the response is being sent from now.
    pub fn deliver(&mut self) {
        if !self.delivering {
            self.delivering = true;
            self.activity.wrote();
            self.activity.delivering.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity
            .quiet_ms
            .store(activity.now_ms(), Ordering::Relaxed);
        if self.delivering {
            activity.delivering.fetch_sub(1, Ordering::AcqRel);
        }
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper drops it.
pub struct Delivery<B> {
    inner: B,
    _flight: InFlight,
}

impl<B> Delivery<B> {
    /// `inner`, being delivered until dropped.
    pub fn new(inner: B, mut flight: InFlight) -> Delivery<B> {
        flight.deliver();
        Delivery {
            inner,
            _flight: flight,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Delivery<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_allowance_ends_the_oldest_handshake_of_the_same_peer_first() {
        let admission = Arc::new(Admission::new(4));
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let slots: Vec<Slot> = (0..MAX_HANDSHAKES_PER_PEER)
            .map(|_| admission.begin_handshake(attacker))
            .collect();
        let mine = admission.begin_handshake(other);
        // One more from the attacker ends the attacker's oldest, not mine.
        let _newest = admission.begin_handshake(attacker);
        tokio::time::timeout(Duration::from_millis(100), slots[0].evicted())
            .await
            .expect("the oldest is told");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), mine.evicted())
                .await
                .is_err()
        );
        assert_eq!(
            admission.handshakes_in_progress(),
            MAX_HANDSHAKES_PER_PEER + 1
        );
        drop(slots);
        drop(mine);
        assert_eq!(admission.handshakes_in_progress(), 1);
    }

    #[tokio::test]
    async fn without_a_free_place_the_longest_idle_connection_makes_room() {
        let admission = Arc::new(Admission::new(2));
        let busy = Arc::new(Activity::new());
        let _request = busy.begin();
        let idle = Arc::new(Activity::new());
        let busy_place = admission.place(Arc::clone(&busy)).await.unwrap();
        let idle_place = admission.place(Arc::clone(&idle)).await.unwrap();
        let newcomer = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.place(Arc::new(Activity::new())).await.is_some() })
        };
        tokio::time::timeout(Duration::from_secs(1), idle_place.evicted())
            .await
            .expect("the idle connection is told to close");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), busy_place.evicted())
                .await
                .is_err()
        );
        drop(idle_place);
        assert!(newcomer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_request_in_flight() {
        let activity = Arc::new(Activity::new());
        let idle = Duration::from_secs(60);
        let response = Duration::from_secs(30);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(activity.expired(idle, response), Some(Expired::Idle));
        let mut request = activity.begin();
        // Handled (a waiting GET): no deadline here.
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(activity.expired(idle, response), None);
        request.deliver();
        tokio::time::advance(Duration::from_secs(29)).await;
        activity.wrote();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(activity.expired(idle, response), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(activity.expired(idle, response), Some(Expired::Stalled));
        drop(request);
        assert_eq!(activity.expired(idle, response), None);
    }
}

//! Waiting for a key to change, for `GET /v1/secrets/{key}?wait=D`.
//!
//! A waiter registers a [`tokio::sync::Notify`] under its key and sleeps on
//! it; a write, delete or consuming read of that key wakes every waiter of
//! that key and no other. Nothing polls: an idle waiter costs its request's
//! future and one map entry shared by all waiters of the key. With no waiter
//! at all a write pays one atomic load, so the request path of a server
//! nobody waits on is unchanged.
//!
//! Waiters re-check the store after every wake-up (a wake-up says "maybe
//! changed"), so a change is never missed: the [`Watch`] is registered, and
//! its `Notified` future enabled, before the waiter looks at the current
//! value. Expiry is not signalled here; a waiter also wakes at the entry's
//! own deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Per key: the `Notify` its waiters share, and how many watches hold it.
type KeyWaiters = HashMap<Box<str>, (Arc<Notify>, usize)>;

/// Everyone waiting, by key.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    /// Registered watches; zero means a write need not take the lock.
    count: AtomicUsize,
    /// Set at shutdown: waiters end at once, and new ones do not wait.
    closed: AtomicBool,
    keys: Mutex<KeyWaiters>,
    /// Wakes every waiter at shutdown.
    all: Notify,
}

impl Watchers {
    fn keys(&self) -> MutexGuard<'_, KeyWaiters> {
        // No code panics while holding it (map operations only).
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a watch of `key`.
    pub(crate) fn watch(self: &Arc<Self>, key: &str) -> Watch {
        let notify = {
            let mut keys = self.keys();
            let (notify, holders) = keys
                .entry(Box::from(key))
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            *holders += 1;
            Arc::clone(notify)
        };
        self.count.fetch_add(1, Ordering::AcqRel);
        Watch {
            watchers: Arc::clone(self),
            key: Box::from(key),
            notify,
        }
    }

    /// Wakes the waiters of `key`, if there are any.
    pub(crate) fn changed(&self, key: &str) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some((notify, _)) = self.keys().get(key) {
            notify.notify_waiters();
        }
    }

    /// Ends every wait now and refuses to start new ones (shutdown).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.all.notify_waiters();
    }

    /// Whether [`Watchers::close`] was called.
    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waiters of every key (for tests and metrics).
    pub(crate) fn waiting(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// A registered interest in one key; unregisters on drop.
#[derive(Debug)]
pub struct Watch {
    watchers: Arc<Watchers>,
    key: Box<str>,
    notify: Arc<Notify>,
}

impl Watch {
    /// A future that completes when the key may have changed, or at
    /// shutdown. It is registered when this is called, not when it is first
    /// polled: call it, then look at the current value, then await it, and
    /// no change in between is missed.
    pub fn next_change(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut key = Box::pin(self.notify.notified());
        key.as_mut().enable();
        let mut all = Box::pin(self.watchers.all.notified());
        all.as_mut().enable();
        async move {
            tokio::select! {
                () = key => {}
                () = all => {}
            }
        }
    }

    /// Whether the server is shutting down (waits end at once).
    pub fn closed(&self) -> bool {
        self.watchers.closed()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers.count.fetch_sub(1, Ordering::AcqRel);
        let mut keys = self.watchers.keys();
        if let Some((_, holders)) = keys.get_mut(&self.key) {
            *holders -= 1;
            if *holders == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

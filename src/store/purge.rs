//! The purge task's sweep: expired entries leave each shard's front.

use super::*;

/// Removes expired entries from the front of each shard's deadline heap and
/// returns the earliest deadline still pending.
pub(super) fn purge_expired(shared: &Shared, now: Tick) -> Option<Tick> {
    let mut earliest: Option<Tick> = None;
    for shard in shared.shards.iter() {
        let mut removed = Vec::new();
        let mut removed_handles = Vec::new();
        {
            let mut shard = lock(shard);
            while let Some(weak) = shard.deadlines.pop_due(now) {
                // A deadline left behind by a replace, a renewal or a removal
                // finds its entry gone, no longer the key's, or not due:
                // nothing to do.
                let Some(due) = weak.upgrade().map(Slot) else {
                    continue;
                };
                let current = shard.entries.get(due.key()).is_some_and(|s| s.is(&due));
                if current && due.deadline() <= now {
                    let slot = shard.remove(due.key());
                    // Before the release below counts the entry's holders.
                    drop(due);
                    removed.extend(slot);
                } else {
                    // Perhaps the last handle of an entry a response held
                    // and has let go since: its wipe waits for the lock's
                    // release.
                    removed_handles.push(due);
                }
            }
            if let Some(next) = shard.deadlines.earliest() {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        for slot in &removed {
            shared.release(slot);
            shared.expired.fetch_add(1, Ordering::Relaxed);
        }
        // `removed` and the handles drop here, outside the lock, wiping the
        // values.
        drop(removed_handles);
    }
    earliest
}

pub(super) async fn purge_task(shared: Arc<Shared>) {
    while !shared.closed.load(Ordering::Acquire) {
        // Reset before purging: a write that lands after this point lowers
        // `next_wake` again and notifies, so no deadline is missed.
        shared.next_wake.store(u64::MAX, Ordering::Release);
        let now = Tick::at(shared.epoch, Instant::now());
        if let Some(Tick(next)) = purge_expired(&shared, now) {
            shared.next_wake.fetch_min(next, Ordering::AcqRel);
        }
        let wake_at = shared.next_wake.load(Ordering::Acquire);
        let sleep_until = (wake_at != u64::MAX).then(|| Tick(wake_at).instant(shared.epoch));
        match sleep_until {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

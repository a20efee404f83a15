//! The purge task's sweep: expired entries leave each shard's front.

use super::*;

/// Removes expired entries from the front of each shard's deadline heap and
/// returns the earliest deadline still pending.
pub(super) fn purge_expired(shared: &Shared, now: Tick) -> Option<Tick> {
    let mut earliest: Option<Tick> = None;
    for shard in shared.shards.iter() {
        let mut removed = Vec::new();
        {
            let mut shard = lock(shard);
            while let Some(key) = shard.deadlines.pop_due(now) {
                // A deadline left behind by a replace, a renewal or a removal
                // finds no entry, or one that is not due: nothing to do.
                if shard
                    .entries
                    .get(&key)
                    .is_some_and(|entry| entry.deadline <= now)
                {
                    if let Some(entry) = shard.entries.remove(&key) {
                        removed.push((key, entry));
                    }
                }
            }
            if let Some(next) = shard.deadlines.earliest() {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        for (key, entry) in &removed {
            shared.release(key, entry);
            shared.expired.fetch_add(1, Ordering::Relaxed);
        }
        // `removed` drops here, outside the lock, wiping the values.
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

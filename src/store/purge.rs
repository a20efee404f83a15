//! The purge task's sweep: expired entries leave each shard's front.

use super::*;

/// Removes expired entries from the front of each shard's deadline set and
/// returns the earliest deadline still pending.
pub(super) fn purge_expired(shared: &Shared, now: Instant) -> Option<Instant> {
    let mut earliest: Option<Instant> = None;
    for shard in shared.shards.iter() {
        let mut removed = Vec::new();
        {
            let mut shard = lock(shard);
            while let Some((deadline, key)) = shard.deadlines.first().cloned() {
                if deadline > now {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    break;
                }
                shard.deadlines.pop_first();
                if let Some(entry) = shard.entries.remove(&key) {
                    removed.push(entry);
                }
            }
        }
        for entry in &removed {
            shared.release(entry);
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
        let now = Instant::now();
        let next = purge_expired(&shared, now);
        if let Some(next) = next {
            let at = next.duration_since(shared.epoch).as_nanos() as u64;
            shared.next_wake.fetch_min(at, Ordering::AcqRel);
        }
        let wake_at = shared.next_wake.load(Ordering::Acquire);
        let sleep_until =
            (wake_at != u64::MAX).then(|| shared.epoch + Duration::from_nanos(wake_at));
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

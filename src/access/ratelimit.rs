//! `--rate-limit N`: each client identity may make N requests a second, in
//! bursts of up to N (a token bucket per identity).
//!
//! Buckets live in a few mutex-guarded maps, sharded by identity so that
//! different clients rarely meet on a lock. Memory is bounded: a bucket idle
//! long enough to have refilled completely carries no information and is
//! dropped when its shard is swept, and a shard never holds more than
//! [`MAX_BUCKETS_PER_SHARD`] identities (the longest idle is evicted first).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

const SHARDS: usize = 16;
/// Identities remembered per shard (16 shards: 65,536 in all).
pub const MAX_BUCKETS_PER_SHARD: usize = 4096;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-identity token buckets.
pub struct RateLimiter {
    rate: f64,
    shards: Vec<Mutex<HashMap<Arc<str>, Bucket>>>,
    hasher: RandomState,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `per_second` requests a second per identity, burst `per_second`.
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_second.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one token for `identity`; on refusal returns the whole seconds
    /// to wait before a token is available (at least 1), for `Retry-After`.
    pub fn check(&self, identity: &Arc<str>) -> Result<(), u64> {
        let now = Instant::now();
        let index = self.hasher.hash_one(&**identity) as usize % SHARDS;
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !shard.contains_key(identity) && shard.len() >= MAX_BUCKETS_PER_SHARD {
            self.sweep(&mut shard, now);
        }
        let bucket = shard.entry(Arc::clone(identity)).or_insert(Bucket {
            tokens: self.rate,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err(Duration::from_secs_f64(wait).as_secs().max(1))
        }
    }

    /// Drops full buckets; if the shard is still at its cap, the most idle.
    fn sweep(&self, shard: &mut HashMap<Arc<str>, Bucket>, now: Instant) {
        let refill = Duration::from_secs_f64(1.0);
        shard.retain(|_, bucket| now.duration_since(bucket.updated) < refill);
        if shard.len() >= MAX_BUCKETS_PER_SHARD {
            if let Some(oldest) = shard
                .iter()
                .min_by_key(|(_, bucket)| bucket.updated)
                .map(|(identity, _)| Arc::clone(identity))
            {
                shard.remove(&oldest);
            }
        }
    }

    /// Identities currently remembered (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_n_then_refusal_then_recovery() {
        let limiter = RateLimiter::new(5);
        let alice: Arc<str> = Arc::from("cn:alice");
        for _ in 0..5 {
            assert_eq!(limiter.check(&alice), Ok(()));
        }
        assert_eq!(limiter.check(&alice), Err(1));
        // Another identity has its own bucket.
        assert_eq!(limiter.check(&Arc::from("cn:bob")), Ok(()));
        tokio::time::advance(Duration::from_millis(210)).await;
        assert_eq!(limiter.check(&alice), Ok(()), "one token back after 1/5 s");
        assert_eq!(limiter.check(&alice), Err(1));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let limiter = RateLimiter::new(1);
        for i in 0..(SHARDS * MAX_BUCKETS_PER_SHARD + 5000) {
            let _ = limiter.check(&Arc::from(format!("cn:client-{i}")));
        }
        assert!(limiter.tracked() <= SHARDS * MAX_BUCKETS_PER_SHARD);
        tokio::time::advance(Duration::from_secs(2)).await;
        let _ = limiter.check(&Arc::from("cn:late"));
        // Full buckets in the late client's shard were swept (when it was at the cap).
        assert!(limiter.tracked() <= SHARDS * MAX_BUCKETS_PER_SHARD);
    }
}

//! Who may do what: the policy of identities, operations and prefixes
//! ([`policy`]), requests per second per identity ([`ratelimit`]), the one
//! JSON audit line per request ([`audit`]), and the live reload of
//! certificates, client CA and policy ([`reload`]).

pub mod audit;
pub mod policy;
pub mod ratelimit;
pub mod reload;

use crate::access::policy::{Operation, Policy};
use crate::access::ratelimit::RateLimiter;

/// Who may do what: the policy (swapped whole on reload) and the rate
/// limiter. Without a policy every client the CA trusts may do everything.
#[derive(Debug, Default)]
pub struct Access {
    /// The current policy, if `--policy` was given.
    pub policy: arc_swap::ArcSwapOption<Policy>,
    /// Per-identity rate limit, if `--rate-limit` was given.
    pub limiter: Option<RateLimiter>,
}

impl Access {
    /// Whether `identity` may do `operation` on `key`.
    pub fn allows(&self, identity: &str, key: &str, operation: Operation) -> bool {
        self.policy
            .load()
            .as_ref()
            .is_none_or(|policy| policy.allows(identity, key, operation))
    }
}

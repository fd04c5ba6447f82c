//! Delete rate limits (`max_deleted_keys_per_second`): the keys that accepted deletes name,
//! counted per user (per client address when clients do not authenticate) in a token bucket
//! with a burst of one second's worth. A delete that would overdraw it is refused, not delayed:
//! a runaway loop gets errors instead of taking Redis down.
//!
//! The buckets live in one keyward process: N instances side by side allow N times the rate.
//! A configuration reload starts them afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::guard::{GuardPolicy, Refusal, Rights, Rule};

/// Buckets kept at most; beyond this, full buckets (which say nothing a new one would not) are
/// dropped, so that many client addresses cannot grow the table without bound.
const MAX_BUCKETS: usize = 100_000;

/// One bucket: tokens are keys that may be deleted; `rate` of them come back per second, up to
/// `rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a delete may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdrawn {
    /// More keys than the bucket holds at all: never, however long one waits.
    TooMany,
    /// Enough tokens after this wait.
    Wait(Duration),
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: u64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate as f64,
            at: now,
        }
    }

    /// Takes `n` tokens at `now` if there are that many, refilled at `rate` per second since
    /// the last take.
    pub fn take(&mut self, n: u64, rate: u64, now: Instant) -> Result<(), Overdrawn> {
        let rate_f = rate as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate_f).min(rate_f);
        self.at = now;
        if n > rate {
            return Err(Overdrawn::TooMany);
        }
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        let wait = (n - self.tokens) / rate_f;
        Err(Overdrawn::Wait(Duration::from_secs_f64(wait)))
    }

    fn is_full(&self, rate: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate as f64 >= rate as f64
    }
}

/// The buckets of every user (or client address) of one keyward process.
#[derive(Debug, Default)]
pub struct DeleteRates {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl DeleteRates {
    /// Takes `n` keys from `who`'s bucket, limited to `rate` per second.
    pub fn take(&self, who: &str, n: u64, rate: u64) -> Result<(), Overdrawn> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(who) {
            return bucket.take(n, rate, now);
        }
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(n, rate, now);
        buckets.insert(who.to_string(), bucket);
        taken
    }
}

/// The rate limit's verdict on a delete of `n` keys by `who` (a user name, or a client
/// address), whose rights are `rights`: None when it may run (the keys are then counted), or
/// the refusal. `command` names the command in the message.
pub fn check(
    rates: &DeleteRates,
    guard: &GuardPolicy,
    rights: &Rights,
    who: impl FnOnce() -> String,
    command: &str,
    n: usize,
) -> Option<Refusal> {
    let rate = guard.delete_rate(rights)?;
    if n == 0 {
        return None;
    }
    let n = n as u64;
    let who = who();
    let overdrawn = rates.take(&who, n, rate).err()?;
    Some(Refusal {
        rule: Rule::RateLimit,
        message: message(command, n, rate, &who, overdrawn),
        key: None,
    })
}

/// Who a client counts as: its user, or its address when keyward does not authenticate.
pub fn who(user: Option<&Arc<str>>, peer: IpAddr) -> String {
    match user {
        Some(name) => format!("user '{name}'"),
        None => format!("client address {peer}"),
    }
}

/// The refusal message of an overdrawn bucket.
pub fn message(command: &str, n: u64, rate: u64, who: &str, overdrawn: Overdrawn) -> String {
    match overdrawn {
        Overdrawn::TooMany => format!(
            "ERR keyward guard: {command} refused, {n} keys exceed the limit of {rate} deleted \
             keys per second for {who} (rule rate_limit); nothing was deleted; send at most \
             {rate} keys per request"
        ),
        Overdrawn::Wait(wait) => format!(
            "ERR keyward guard: {command} refused, {n} more keys would exceed the limit of \
             {rate} deleted keys per second for {who} (rule rate_limit); nothing was deleted; \
             retry in {} ms",
            wait.as_millis().max(1)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10, t0);
        assert_eq!(b.take(10, 10, t0), Ok(()));
        assert_eq!(
            b.take(5, 10, t0),
            Err(Overdrawn::Wait(Duration::from_millis(500)))
        );
        assert_eq!(b.take(5, 10, t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(
            b.take(11, 10, t0 + Duration::from_secs(60)),
            Err(Overdrawn::TooMany)
        );
        assert_eq!(b.take(10, 10, t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn buckets_are_kept_per_user() {
        let rates = DeleteRates::default();
        assert_eq!(rates.take("a", 3, 3), Ok(()));
        assert!(rates.take("a", 1, 3).is_err());
        assert_eq!(rates.take("b", 3, 3), Ok(()));
    }

    proptest! {
        /// However the takes are spread, no window of one second lets more than twice the
        /// rate through (a full bucket, then a second's refill), and a take is refused only
        /// when the bucket really is short.
        #[test]
        fn a_bucket_never_lets_more_through_than_its_rate_allows(
            rate in 1u64..50,
            takes in proptest::collection::vec((0u64..60, 0u64..400), 1..60),
        ) {
            let t0 = Instant::now();
            let mut bucket = Bucket::full(rate, t0);
            let mut at = t0;
            let mut granted: Vec<(Instant, u64)> = Vec::new();
            for (n, gap_ms) in takes {
                at += Duration::from_millis(gap_ms);
                let before = bucket;
                match bucket.take(n, rate, at) {
                    Ok(()) => granted.push((at, n)),
                    Err(Overdrawn::TooMany) => prop_assert!(n > rate),
                    Err(Overdrawn::Wait(wait)) => {
                        prop_assert!(wait > Duration::ZERO);
                        let mut later = before;
                        prop_assert!(later.take(n, rate, at + wait + Duration::from_millis(1)).is_ok());
                    }
                }
            }
            for &(start, _) in &granted {
                let in_window: u64 = granted
                    .iter()
                    .filter(|(t, _)| *t >= start && *t < start + Duration::from_secs(1))
                    .map(|(_, n)| n)
                    .sum();
                prop_assert!(in_window <= 2 * rate, "{} in a second at rate {}", in_window, rate);
            }
        }
    }
}

//! What a request spends: the counters it takes, decided from its caller and route alone.
//! Every request of a caller with limits takes one unit of its `requests_per_minute`, an async
//! submit one of its `submits_per_minute` too; a browser token's request takes from its own
//! limits and from its key's. The counters themselves are the platform's
//! ([`crate::engine::ports::counters`]); a request refused by one spends nothing.
//!
//! Rates are counted in fixed windows of the clock's minute: at most `quota` requests from
//! `hh:mm:00` to `hh:mm:59.999`, so up to twice the quota can pass within a minute that
//! straddles two windows (the IETF `RateLimit` fields describe exactly this: `w=60`, `t=` the
//! seconds left).

use crate::engine::base::{Error, Timestamp};
use crate::engine::config::{ApiKey, Limits};
use crate::engine::ports::counters::{self, Charge, Taken};
use crate::engine::ports::kv::Counts;
use crate::engine::{Route, Timer};

const WINDOW_MS: u64 = 60_000;

/// The counters one request takes, and what to answer when one is full.
#[derive(Debug, Clone, Default)]
pub struct Spend {
    tenant: String,
    planned: Vec<Planned>,
}

#[derive(Debug, Clone)]
struct Planned {
    charge: Charge,
    limit: &'static str,
    quota: u64,
    ends: Timestamp,
    whose: &'static str,
}

/// What `caller`'s request for `route` spends at `now`.
pub fn spend(caller: &ApiKey, route: &Route, now: Timestamp) -> Spend {
    let mut spend = Spend { tenant: caller.tenant().to_owned(), planned: Vec::new() };
    let submit = matches!(route, Route::AsyncPredict { .. });
    let window = now.millis() / WINDOW_MS;
    let ends = Timestamp::from_millis((window + 1) * WINDOW_MS);
    let mut add = |subject: &str, limits: &Limits, whose: &'static str| {
        for (limit, quota) in limits.each() {
            let Some(quota) = quota else { continue };
            if limit == "submits_per_minute" && !submit {
                continue;
            }
            let counter = |window: u64| format!("limits/{subject}/{limit}/{window}");
            let charge = Charge { counter: counter(window), limit: quota, follows: window.checked_sub(1).map(counter) };
            spend.planned.push(Planned { charge, limit, quota, ends, whose });
        }
    };
    match &caller.token {
        Some(token) => {
            add(&caller.id, &caller.limits, "browser token");
            add(&token.parent, &token.parent_limits, "browser token's key");
        }
        None => add(&caller.id, &caller.limits, "key"),
    }
    spend
}

impl Spend {
    /// Nothing to count: the caller has no limits that apply to this request.
    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    /// The key (a configured key's id) whose counters these are: on Workers, the name of the
    /// Durable Object that holds them.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// What the counters must take, all or none ([`counters::take`]).
    pub fn charges(&self) -> Vec<Charge> {
        self.planned.iter().map(|p| p.charge.clone()).collect()
    }

    /// The answer to what the counters took: nothing to say, or the 429 of the full one.
    pub fn verdict(&self, taken: &Taken, now: Timestamp) -> Result<(), Error> {
        let Taken::Full(index) = taken else { return Ok(()) };
        let Some(full) = self.planned.get(*index) else { return Ok(()) };
        Err(Error::RateLimited {
            limit: full.limit,
            quota: full.quota,
            window_seconds: WINDOW_MS / 1000,
            retry_after_seconds: full.ends.millis_since(now).div_ceil(1000).max(1),
            whose: full.whose,
        })
    }

    /// Takes the charges from counters in `kv` (where they are in the same place as the
    /// request: Spin's shared store, the engine's tests) and answers as [`Spend::verdict`].
    pub async fn take<K: Counts, T: Timer>(&self, kv: &K, timer: &T) -> Result<(), Error> {
        if self.is_empty() {
            return Ok(());
        }
        let taken = counters::take(kv, timer, &self.charges()).await?;
        self.verdict(&taken, timer.now())
    }
}

//! Counters that limit what a caller spends, each unit taken with one atomic `increment`, so a
//! count is exact however many isolates, instances or hosts take from it at once: with a
//! limit of N, exactly N of any number of concurrent takes pass. On Spin they are in the
//! shared `wasi:keyvalue` store; on Workers in one Durable Object per key.
//!
//! A request takes its charges all or none: a charge that would go over its limit is given
//! back with every one taken before it, so a refused request spends nothing. Between its
//! increment and its give-back, a refused take counts for an instant: a concurrent take may
//! then be refused one unit early, never let through one unit late.

use serde::{Deserialize, Serialize};

use super::kv::{retry_busy, Counts};
use super::store::StoreError;
use crate::engine::Timer;

/// One unit to take from a counter that may hold at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub counter: String,
    pub limit: u64,
    /// A counter this one follows (the same rate's previous window): deleted when this one is
    /// first taken, so past windows do not pile up in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

/// What taking a request's charges came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Taken {
    /// Every charge was taken: each counter's count after it, in the charges' order.
    All(Vec<u64>),
    /// The charge at this index was at its limit: nothing was taken.
    Full(usize),
}

/// Takes one unit of each charge, all or none (see the module).
pub async fn take<K: Counts, T: Timer>(kv: &K, timer: &T, charges: &[Charge]) -> Result<Taken, StoreError> {
    let mut counts = Vec::with_capacity(charges.len());
    for (i, charge) in charges.iter().enumerate() {
        let count = retry_busy(timer, || kv.increment(&charge.counter, 1)).await?;
        let count = u64::try_from(count).unwrap_or(0);
        if count == 1 {
            if let Some(past) = &charge.follows {
                // Housekeeping only: a past window left behind costs a key, not a decision.
                let _ = retry_busy(timer, || kv.delete(past)).await;
            }
        }
        if count > charge.limit {
            // A refused request spends nothing: this unit and every one taken before it go back.
            for given in &charges[..=i] {
                retry_busy(timer, || kv.increment(&given.counter, -1)).await?;
            }
            return Ok(Taken::Full(i));
        }
        counts.push(count);
    }
    Ok(Taken::All(counts))
}

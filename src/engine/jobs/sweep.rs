//! The sweep: everything due on every live job (submission retries, reconciliation, expiry,
//! webhook attempts, deletion at the end of retention), one lease-holding sweep per store at
//! a time. Durable Objects run it from each job's alarm; Spin after a response when due
//! ([`Engine::note_wake`], [`Engine::sweep_if_due`]) and on `POST /_sweep`.

use crate::engine::base::{Error, Timestamp};
use crate::engine::jobs::persist::{due_key, job_key};
use crate::engine::jobs::record::{Job, Status, Upstream, CLAIM_LEASE_MS, RECONCILE_EVERY_MS, RECONCILE_ON_READ_MS};
use crate::engine::{Engine, HttpClient, Store, SweepReport};

/// Only one sweep runs per store at a time: the lease is one key per window this long, so a
/// holder that died holds it at most to the end of its window.
const SWEEP_LEASE_MS: u64 = 60_000;
/// Where alarm-less platforms note their next sweep (see [`Engine::note_wake`]).
const NEXT_SWEEP_KEY: &str = "sweep/next";
/// Jobs with nothing left but deletion, parked out of the due index (see [`kept_key`]).
const KEPT_PREFIX: &str = "kept/";

/// A parked job's entry: `kept/{end of retention, 20 digits}/{id}`. The sweep reads these keys,
/// not the records they name, until the time in the key comes; so finished jobs kept for their
/// results cost a sweep one listed key each, not one record read.
fn kept_key(id: &str, until: Timestamp) -> String {
    format!("{KEPT_PREFIX}{:020}/{id}", until.millis())
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The end of retention and the id a [`kept_key`] names.
fn parse_kept_key(key: &str) -> Option<(Timestamp, &str)> {
    let (until, id) = key.strip_prefix(KEPT_PREFIX)?.split_once('/')?;
    Some((Timestamp::from_millis(until.parse().ok()?), id))
}

/// The sweep lease of the window `now` falls in (see [`Engine::sweep`]).
pub fn sweep_lease_key(now: Timestamp) -> String {
    format!("sweep/lease/{}", now.millis() / SWEEP_LEASE_MS)
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// Runs everything due on every live job. Failures leave a job due; they are counted.
    ///
    /// One sweep at a time per store, so concurrent instances (Spin runs them in parallel, on
    /// one host or several sharing a store) do not deliver a webhook or submit a job twice.
    /// The lease is a key per [`SWEEP_LEASE_MS`] window, `sweep/lease/{window}`, claimed with
    /// put-if-absent and deleted by its holder when done. A holder that dies keeps it only to
    /// the end of its window: the next window's key is a new claim, so no one ever has to
    /// take a lease over (take-over by delete-then-claim lets two takers both win). A sweep
    /// that finds the window's lease taken does nothing and asks to be woken again shortly.
    ///
    /// The lease keeps sweeps from doing the same work at once; it is not what makes them
    /// safe. A sweep slowed past its window (slow receivers, many jobs) can overlap the next
    /// window's sweep, so each job's outbound work is claimed on its record first
    /// ([`CLAIM_LEASE_MS`](crate::engine::jobs::record::CLAIM_LEASE_MS)), at the time `clock` gives when the
    /// sweep reaches that job.
    ///
    /// A sweep takes no new job once its window is over unless it renews the lease into the
    /// window it is in (claims the new window's key, as a new sweep would); if another sweep
    /// holds that one, it stops there and leaves the rest to it.
    pub async fn sweep(&self, clock: &dyn Fn() -> Timestamp) -> SweepReport {
        let now = clock();
        let mut report = SweepReport::default();
        let mut lease = sweep_lease_key(now);
        if !matches!(self.store.put_if_absent(&lease, Vec::new()).await, Ok(true)) {
            report.wake_at = Some(now.plus_millis(RECONCILE_ON_READ_MS));
            return report;
        }
        report.ran = true;
        self.sweep_leased(clock, &mut lease, &mut report).await;
        // Only the holder gets here: the claim above (or the renewal) succeeded for it alone.
        let _ = self.store.delete(&lease).await;
        report
    }

    /// Whether the sweep holding `lease` may take more work at the time `clock` gives: its
    /// window is not over, or it renewed the lease into the window now (and let the old go).
    async fn still_leased(&self, clock: &dyn Fn() -> Timestamp, lease: &mut String) -> bool {
        let current = sweep_lease_key(clock());
        if current == *lease {
            return true;
        }
        if !matches!(self.store.put_if_absent(&current, Vec::new()).await, Ok(true)) {
            return false;
        }
        let _ = self.store.delete(lease).await;
        *lease = current;
        true
    }

    async fn sweep_leased(&self, clock: &dyn Fn() -> Timestamp, lease: &mut String, report: &mut SweepReport) {
        let now = clock();
        let (ids, parked) = match (self.store.list("due/").await, self.store.list(KEPT_PREFIX).await) {
            (Ok(ids), Ok(parked)) => (ids, parked),
            _ => {
                report.failed = 1;
                report.wake_at = Some(now.plus_millis(RECONCILE_ON_READ_MS * 60));
                return;
            }
        };
        let given_up = |report: &mut SweepReport| {
            // Another sweep holds the lease now: it does the rest; come back soon in case it dies.
            report.wake_at = earliest(report.wake_at, Some(clock().plus_millis(RECONCILE_ON_READ_MS)));
        };
        for key in parked {
            let Some((until, id)) = parse_kept_key(&key) else { continue };
            let now = clock();
            if until > now {
                report.wake_at = earliest(report.wake_at, Some(until));
                continue;
            }
            if !self.still_leased(clock, lease).await {
                return given_up(report);
            }
            report.processed += 1;
            match self.forget(id, &key).await {
                Ok(()) => report.deleted += 1,
                Err(e) => {
                    report.failed += 1;
                    report.first_error.get_or_insert_with(|| format!("job {id}: {e}"));
                    report.wake_at = earliest(report.wake_at, Some(now.plus_millis(RECONCILE_ON_READ_MS * 30)));
                }
            }
        }
        for key in ids {
            let id = key.trim_start_matches("due/");
            if !self.still_leased(clock, lease).await {
                return given_up(report);
            }
            let now = clock();
            let next = match self.load(id).await {
                Ok(Some(job)) if job.next_due(self.config.retention_seconds) > now => {
                    let until = job.retained_until(self.config.retention_seconds);
                    // Nothing left but deletion: parked, so later sweeps read no record for it.
                    // Best effort: if the store refuses, it stays in the index and comes again.
                    if job.only_retention_left() && self.park(&job, until).await.is_ok() {
                        report.parked += 1;
                    }
                    Some(job.next_due(self.config.retention_seconds))
                }
                Ok(_) => {
                    report.processed += 1;
                    match self.run_due(id, clock).await {
                        Ok(Some(next)) => Some(next),
                        Ok(None) => {
                            report.deleted += 1;
                            None
                        }
                        Err(e) => {
                            report.failed += 1;
                            report.first_error.get_or_insert_with(|| format!("job {id}: {e}"));
                            Some(now.plus_millis(RECONCILE_ON_READ_MS * 30))
                        }
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    report.first_error.get_or_insert_with(|| format!("job {id}: {e}"));
                    Some(now.plus_millis(RECONCILE_ON_READ_MS * 30))
                }
            };
            report.wake_at = earliest(report.wake_at, next);
        }
    }

    /// Moves a job with only deletion left from the due index to its [`kept_key`]: the new
    /// entry first, so a crash between the two leaves the job in both (parked again by the
    /// next sweep), never in neither (kept forever).
    async fn park(&self, job: &Job, until: Timestamp) -> Result<(), Error> {
        self.store.put(&kept_key(&job.id, until), Vec::new()).await?;
        self.store.delete(&due_key(&job.id)).await?;
        Ok(())
    }

    /// Deletes a job at the end of its retention, and every key that points to it: the record
    /// first (once it is gone nothing can read it; the rest are pointers to it), then its large
    /// output, its idempotency record, and its entry in the due index or among the parked.
    async fn forget(&self, id: &str, index_key: &str) -> Result<(), Error> {
        if let Some(job) = self.load(id).await? {
            self.store.delete(&job_key(id)).await?;
            if let Some(chunks) = &job.output_chunks {
                self.delete_output(chunks).await?;
            }
            if let Some(record) = &job.idempotency_record {
                self.store.delete(record).await?;
            }
        }
        self.store.delete(index_key).await?;
        Ok(())
    }

    /// For platforms without alarms (Spin): remembers the earliest wake-up asked for, under
    /// one store key, so a later request or a scheduler's `POST /_sweep` knows a sweep is due.
    /// Best effort: a lost note only delays work until the next scheduled sweep.
    pub async fn note_wake(&self, wake_at: Option<Timestamp>) {
        let Some(at) = wake_at else { return };
        let current = self.next_sweep().await;
        if current.is_none_or(|c| at < c) {
            let _ = self.store.put(NEXT_SWEEP_KEY, at.millis().to_string().into_bytes()).await;
        }
    }

    /// Runs the sweep if the noted wake-up has come (see [`Engine::note_wake`]); otherwise
    /// costs one store read. Returns the report when it ran.
    pub async fn sweep_if_due(&self, clock: &dyn Fn() -> Timestamp) -> Option<SweepReport> {
        if self.next_sweep().await.is_none_or(|at| at > clock()) {
            return None;
        }
        // Clear first: wake-ups noted while this sweep runs must survive it.
        let _ = self.store.delete(NEXT_SWEEP_KEY).await;
        let report = self.sweep(clock).await;
        self.note_wake(report.wake_at).await;
        Some(report)
    }

    async fn next_sweep(&self) -> Option<Timestamp> {
        let bytes = self.store.get(NEXT_SWEEP_KEY).await.ok()??;
        std::str::from_utf8(&bytes).ok()?.parse().ok().map(Timestamp::from_millis)
    }

    /// Does what is due for one job; returns when it is next due, or `None` once it is gone.
    /// The sweep calls it for each due job. Each claim on the job's outbound work is made at
    /// the time `clock` gives when it is made, so claims made late in a long sweep still last
    /// their full lease.
    pub async fn run_due(&self, id: &str, clock: &dyn Fn() -> Timestamp) -> Result<Option<Timestamp>, Error> {
        let now = clock();
        let retention = self.config.retention_seconds;
        let Some(job) = self.load(id).await? else {
            // No record: its submit is still writing it, or died between index and record.
            let made =
                self.store.get(&due_key(id)).await?.and_then(|v| {
                    std::str::from_utf8(&v).ok().and_then(|v| v.parse().ok()).map(Timestamp::from_millis)
                });
            if let Some(settled) = made.map(|t| t.plus_millis(CLAIM_LEASE_MS)).filter(|t| now < *t) {
                return Ok(Some(settled));
            }
            self.store.delete(&due_key(id)).await?;
            return Ok(None);
        };
        if now >= job.retained_until(retention) {
            self.forget(id, &due_key(id)).await?;
            return Ok(None);
        }
        let (mut job, _) = self.refresh(job, now, RECONCILE_EVERY_MS).await?;
        let now = clock();
        if matches!(job.upstream, Upstream::Pending { next_at, .. } if next_at <= now) && !job.status.is_terminal() {
            // Claim the submission on the record: of two sweeps, only one submits.
            let (claimed, won) = self
                .update(id, |j| match &mut j.upstream {
                    // Canceled while a submission that then died was in flight: do not submit it.
                    Upstream::Pending { next_at, .. } if *next_at <= now && j.cancel_requested => {
                        j.move_if_legal(Status::Canceled, now)?;
                        Ok(false)
                    }
                    Upstream::Pending { next_at, in_flight, .. } if *next_at <= now && !j.status.is_terminal() => {
                        *next_at = now.plus_millis(CLAIM_LEASE_MS);
                        *in_flight = true;
                        Ok(true)
                    }
                    _ => Ok(false),
                })
                .await?;
            job = if won { self.submit_upstream(id, clock).await? } else { claimed };
        }
        if job.webhook.as_ref().and_then(|w| w.next_at).is_some_and(|at| at <= clock()) {
            job = self.deliver(id, clock).await?;
        }
        Ok(Some(job.next_due(retention)))
    }
}

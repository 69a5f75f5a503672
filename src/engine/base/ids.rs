//! Request ids: 32 lowercase hex characters (128 bits, random or derived from an
//! `Idempotency-Key`), the handle every job is found by.

/// Whether `id` has a request id's shape; anything else cannot name a job.
pub fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

//! The async job, from submit to deletion: the record and its state machines, the submit
//! body, reading and writing records, submission, cancel, reconciliation with the upstream,
//! outputs, and the sweep that does what is due.

pub(crate) mod cancel;
pub(crate) mod output;
pub(crate) mod persist;
pub(crate) mod reconcile;
pub mod record;
pub mod request;
pub(crate) mod submit;
pub(crate) mod sweep;
pub mod view;

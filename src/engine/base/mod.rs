//! The leaves of the engine: errors, time and the API's nouns. Nothing here imports anything
//! else from the engine; everything else may import from here.

pub mod crypto;
pub mod error;
pub mod ids;
pub mod names;
pub mod time;
pub mod trace;

pub(crate) use error::{baseten_code_for, json_response};
pub use error::{Error, IllegalTransition, Source, StoreError, TransportError, BASETEN_ERROR_CODES};
pub use ids::is_request_id;
pub use names::{Operation, Subject, Target};
pub use time::Timestamp;
pub use trace::Trace;

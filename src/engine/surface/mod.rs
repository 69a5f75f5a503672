//! The HTTP surface: what a request is (its route, parsed once), the pipeline that admits and
//! dispatches it, CORS on every answer, and the long-poll.

pub(crate) mod cors;
pub mod log;
pub(crate) mod long_poll;
pub(crate) mod pipeline;
pub mod route;

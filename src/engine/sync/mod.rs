//! Calls relayed to the model without a job: sync predict and `sync/{path}`, WebSockets,
//! queue status and wake, and the OpenAI-compatible `/v1` front door.

pub(crate) mod openai;
pub(crate) mod relay;

//! The API's nouns: what a request addresses ([`Subject`]), which deployment of it
//! ([`Target`]), and what it does ([`Operation`]). Routing, configuration, access and the job
//! record all speak them, so they live below every one of those.

use serde::{Deserialize, Serialize};

/// What a request addresses: a model or a chain, by the gateway's id for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Model(String),
    Chain(String),
}

impl Subject {
    pub fn id(&self) -> &str {
        match self {
            Self::Model(id) | Self::Chain(id) => id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Model(_) => "model",
            Self::Chain(_) => "chain",
        }
    }

    /// The JSON field Baseten uses for this subject's id on status records.
    pub fn id_field(&self) -> &'static str {
        match self {
            Self::Model(_) => "model_id",
            Self::Chain(_) => "chain_id",
        }
    }

    /// Sync endpoint name on the upstream.
    pub fn sync_endpoint(&self) -> &'static str {
        match self {
            Self::Model(_) => "predict",
            Self::Chain(_) => "run_remote",
        }
    }

    /// Async endpoint name on the upstream.
    pub fn async_endpoint(&self) -> &'static str {
        match self {
            Self::Model(_) => "async_predict",
            Self::Chain(_) => "async_run_remote",
        }
    }
}

/// Which deployment of the subject: Baseten's four target forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    Production,
    Development,
    Environment(String),
    Deployment(String),
}

impl Target {
    /// The path segment(s) the upstream expects, e.g. `environments/staging`.
    pub fn path(&self) -> String {
        match self {
            Self::Production => "production".to_owned(),
            Self::Development => "development".to_owned(),
            Self::Environment(env) => format!("environments/{env}"),
            Self::Deployment(id) => format!("deployment/{id}"),
        }
    }
}

/// The operations a key can be scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `predict` and `run_remote`.
    Predict,
    /// `async_predict` and `async_run_remote`.
    AsyncPredict,
    Status,
    Cancel,
    QueueStatus,
    Wake,
    /// `{target}/sync/{path}`: a model server's own routes (an OpenAI-compatible API, custom
    /// routes), passed through with any method; and `{target}/websocket`.
    Sync,
    /// `POST /_sweep`: run due work now (for platforms without alarms).
    Sweep,
    /// `POST /browser_tokens`: mint a short-lived browser token. Never granted to a token.
    MintToken,
}

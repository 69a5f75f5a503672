//! Request addressing, parsed once into [`Route`].
//!
//! Path form: `/models/{id}/{target}/{endpoint}`, `/chains/{id}/{target}/{endpoint}`,
//! `/models/{id}/async_request/{request_id}` (same for chains).
//! Host form: `Host: model-{id}.<anything>` (or `chain-{id}.`) with the path
//! `/{target}/{endpoint}` or `/async_request/{request_id}`.
//!
//! `{target}` is `production`, `development`, `environments/{name}` or
//! `deployment/{deployment_id}`.

/// Whether the addressed thing is a model or a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Model,
    Chain,
}

/// The model or chain a request addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub kind: Kind,
    pub id: String,
}

impl Owner {
    /// The JSON field naming the owner in status records: `model_id` or `chain_id`.
    pub fn id_field(&self) -> &'static str {
        match self.kind {
            Kind::Model => "model_id",
            Kind::Chain => "chain_id",
        }
    }

    /// The deployment a target resolves to; each deployment has its own queue.
    pub fn deployment_id(&self, target: &Target) -> String {
        let id = &self.id;
        match target {
            Target::Production => format!("dep-{id}-prod"),
            Target::Development => format!("dep-{id}-dev"),
            Target::Environment(env) => format!("dep-{id}-{env}"),
            Target::Deployment(dep) => dep.clone(),
        }
    }
}

/// Which deployment of a model or chain is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Production,
    Development,
    Environment(String),
    Deployment(String),
}

/// What is asked of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `predict` (models) / `run_remote` (chains).
    Predict,
    /// `async_predict` (models) / `async_run_remote` (chains).
    AsyncPredict,
    /// `async_queue_status`.
    QueueStatus,
    /// `wake`.
    Wake,
}

/// A fully parsed request address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Target { owner: Owner, target: Target, endpoint: Endpoint },
    AsyncRequest { owner: Owner, request_id: String },
}

/// Parses a request's `Host` header (if any) and path. `None` means no such route.
pub fn parse(host: Option<&str>, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (owner, rest) = match segments.as_slice() {
        ["models", id, rest @ ..] => (owner(Kind::Model, id)?, rest),
        ["chains", id, rest @ ..] => (owner(Kind::Chain, id)?, rest),
        rest => (host_owner(host?)?, rest),
    };
    let (target, endpoint) = match rest {
        ["async_request", request_id] => {
            return Some(Route::AsyncRequest { owner, request_id: (*request_id).to_owned() })
        }
        ["production", ep] => (Target::Production, *ep),
        ["development", ep] => (Target::Development, *ep),
        ["environments", env, ep] => (Target::Environment((*env).to_owned()), *ep),
        ["deployment", dep, ep] => (Target::Deployment((*dep).to_owned()), *ep),
        _ => return None,
    };
    let endpoint = match (owner.kind, endpoint) {
        (Kind::Model, "predict") | (Kind::Chain, "run_remote") => Endpoint::Predict,
        (Kind::Model, "async_predict") | (Kind::Chain, "async_run_remote") => Endpoint::AsyncPredict,
        (_, "async_queue_status") => Endpoint::QueueStatus,
        (_, "wake") => Endpoint::Wake,
        _ => return None,
    };
    Some(Route::Target { owner, target, endpoint })
}

fn owner(kind: Kind, id: &str) -> Option<Owner> {
    (!id.is_empty()).then(|| Owner { kind, id: id.to_owned() })
}

/// `model-{id}.<anything>` / `chain-{id}.<anything>` (a port is ignored).
fn host_owner(host: &str) -> Option<Owner> {
    let (label, _rest) = host.split_once('.')?;
    if let Some(id) = label.strip_prefix("model-") {
        owner(Kind::Model, id)
    } else if let Some(id) = label.strip_prefix("chain-") {
        owner(Kind::Chain, id)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str) -> Owner {
        Owner { kind: Kind::Model, id: id.to_owned() }
    }

    #[test]
    fn path_and_host_forms() {
        let want = Some(Route::Target {
            owner: model("abc"),
            target: Target::Environment("staging".into()),
            endpoint: Endpoint::AsyncPredict,
        });
        assert_eq!(parse(None, "/models/abc/environments/staging/async_predict"), want);
        assert_eq!(parse(Some("model-abc.api.baseten.co"), "/environments/staging/async_predict"), want);
        assert_eq!(
            parse(Some("chain-c1.localhost:8788"), "/async_request/r1"),
            Some(Route::AsyncRequest { owner: Owner { kind: Kind::Chain, id: "c1".into() }, request_id: "r1".into() })
        );
        assert_eq!(
            parse(None, "/chains/c1/deployment/d9/run_remote"),
            Some(Route::Target {
                owner: Owner { kind: Kind::Chain, id: "c1".into() },
                target: Target::Deployment("d9".into()),
                endpoint: Endpoint::Predict,
            })
        );
    }

    #[test]
    fn rejects_unknown_shapes() {
        assert_eq!(parse(None, "/models/abc/production/run_remote"), None);
        assert_eq!(parse(None, "/chains/abc/production/predict"), None);
        assert_eq!(parse(None, "/production/predict"), None);
        assert_eq!(parse(Some("localhost"), "/production/predict"), None);
        assert_eq!(parse(None, "/models/abc/staging/predict"), None);
    }

    #[test]
    fn deployment_ids() {
        let m = model("m");
        assert_eq!(m.deployment_id(&Target::Production), "dep-m-prod");
        assert_eq!(m.deployment_id(&Target::Development), "dep-m-dev");
        assert_eq!(m.deployment_id(&Target::Environment("s".into())), "dep-m-s");
        assert_eq!(m.deployment_id(&Target::Deployment("x".into())), "x");
    }
}

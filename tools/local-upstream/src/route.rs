//! Request addressing, parsed once into [`Route`].
//!
//! Path form: `/models/{id}/{target}/{endpoint}`, `/chains/{id}/{target}/{endpoint}`,
//! `/models/{id}/async_request/{request_id}` (same for chains).
//! Host form: `Host: model-{id}.<anything>` (or `chain-{id}.`) with the path
//! `/{target}/{endpoint}` or `/async_request/{request_id}`.
//!
//! `{target}` is `production`, `development`, `environments/{name}` or
//! `deployment/{deployment_id}`.
//!
//! Models also have the sync passthrough `{target}/sync/{path...}` (any
//! method; `{path}` may hold slashes or be empty), answered by the model's own
//! HTTP server (see [`crate::openai`]).
//!
//! Regional environment hosts: `Host: model-{id}-{env}.<anything>` with a bare
//! path (`/predict`, `/async_predict`, `/async_queue_status`, `/wake`,
//! `/sync/{path...}`; chains `chain-{id}-{env}.` with `/run_remote`,
//! `/async_run_remote`, `/async_queue_status`, `/wake`) address target
//! `environments/{env}`. The label is split at its first `-`, so model ids have
//! no `-` in host form, and `model-{id}-{env}.` with a `/{target}/...` path is
//! no route. Chain ids may hold a `-` (the default is `demo-chain`):
//! `chain-{x}.` with a `/{target}/...` path names chain `{x}` whole, and only a
//! bare path splits `{x}` into id and environment.
//!
//! Test affordance: a caller on loopback cannot pick a host name, so the path
//! prefix `/_host/{label}/{rest...}` means exactly `Host: {label}.local` with
//! the path `/{rest...}` (it wins over the real `Host` header).

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `predict` (models) / `run_remote` (chains).
    Predict,
    /// `async_predict` (models) / `async_run_remote` (chains).
    AsyncPredict,
    /// `async_queue_status`.
    QueueStatus,
    /// `wake`.
    Wake,
    /// `sync/{path}` (models only): the path after `sync/`, as sent (may be empty).
    Sync(String),
    /// `websocket`: a WebSocket to the model's (or chain's) server.
    WebSocket,
}

/// A fully parsed request address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Target { owner: Owner, target: Target, endpoint: Endpoint },
    AsyncRequest { owner: Owner, request_id: String },
}

/// Parses a request's `Host` header (if any) and path. `None` means no such route.
pub fn parse(host: Option<&str>, path: &str) -> Option<Route> {
    let prefixed;
    let (host, path) = match path.strip_prefix("/_host/") {
        Some(rest) => {
            let (label, rest) = rest.split_once('/').unwrap_or((rest, ""));
            prefixed = format!("{label}.local");
            (Some(prefixed.as_str()), rest)
        }
        None => (host, path),
    };
    let mut path = Segments(path);
    match path.clone().next() {
        Some("models") => {
            path.next();
            target_route(owner(Kind::Model, path.next()?)?, path)
        }
        Some("chains") => {
            path.next();
            target_route(owner(Kind::Chain, path.next()?)?, path)
        }
        _ => host_route(host?, path),
    }
}

/// The path segments still to parse; empty segments (`//`) are skipped.
#[derive(Debug, Clone, Copy)]
struct Segments<'a>(&'a str);

impl<'a> Segments<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let s = self.0.trim_start_matches('/');
        if s.is_empty() {
            self.0 = s;
            return None;
        }
        let (segment, rest) = s.split_once('/').unwrap_or((s, ""));
        self.0 = rest;
        Some(segment)
    }

    /// The unparsed rest, as sent (after the `/` that ended the last segment).
    fn rest(self) -> &'a str {
        self.0
    }

    fn is_done(mut self) -> bool {
        self.next().is_none()
    }
}

/// `{target}/{endpoint}` or `async_request/{request_id}`.
fn target_route(owner: Owner, mut path: Segments<'_>) -> Option<Route> {
    let target = match path.next()? {
        "async_request" => {
            let request_id = path.next()?.to_owned();
            return path.is_done().then_some(Route::AsyncRequest { owner, request_id });
        }
        "production" => Target::Production,
        "development" => Target::Development,
        "environments" => Target::Environment(path.next()?.to_owned()),
        "deployment" => Target::Deployment(path.next()?.to_owned()),
        _ => return None,
    };
    endpoint_route(owner, target, path)
}

/// `{endpoint}` of an already known target.
fn endpoint_route(owner: Owner, target: Target, mut path: Segments<'_>) -> Option<Route> {
    let endpoint = match (owner.kind, path.next()?) {
        (Kind::Model, "sync") => Endpoint::Sync(path.rest().to_owned()),
        (_, _) if !path.is_done() => return None,
        (Kind::Model, "predict") | (Kind::Chain, "run_remote") => Endpoint::Predict,
        (Kind::Model, "async_predict") | (Kind::Chain, "async_run_remote") => Endpoint::AsyncPredict,
        (_, "async_queue_status") => Endpoint::QueueStatus,
        (_, "wake") => Endpoint::Wake,
        (_, "websocket") => Endpoint::WebSocket,
        _ => return None,
    };
    Some(Route::Target { owner, target, endpoint })
}

/// Host form: `model-{id}.` / `chain-{id}.` (a port is ignored) with a target
/// path, or a regional `model-{id}-{env}.` / `chain-{id}-{env}.` with a bare one.
fn host_route(host: &str, path: Segments<'_>) -> Option<Route> {
    let (label, _rest) = host.split_once('.')?;
    let (kind, name) = if let Some(name) = label.strip_prefix("model-") {
        (Kind::Model, name)
    } else if let Some(name) = label.strip_prefix("chain-") {
        (Kind::Chain, name)
    } else {
        return None;
    };
    let regional = || {
        let (id, env) = name.split_once('-')?;
        (!env.is_empty()).then_some(())?;
        let owner = owner(kind, id)?;
        // A job is read where it was submitted: `/async_request/{id}` on the regional host.
        if path.clone().next() == Some("async_request") {
            return target_route(owner, path);
        }
        endpoint_route(owner, Target::Environment(env.to_owned()), path)
    };
    match kind {
        Kind::Model if name.contains('-') => regional(),
        Kind::Model => target_route(owner(kind, name)?, path),
        Kind::Chain => target_route(owner(kind, name)?, path).or_else(regional),
    }
}

fn owner(kind: Kind, id: &str) -> Option<Owner> {
    (!id.is_empty()).then(|| Owner { kind, id: id.to_owned() })
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

    fn target(owner: Owner, target: Target, endpoint: Endpoint) -> Option<Route> {
        Some(Route::Target { owner, target, endpoint })
    }

    fn sync(path: &str) -> Endpoint {
        Endpoint::Sync(path.to_owned())
    }

    #[test]
    fn sync_paths_keep_their_rest_as_sent() {
        for (path, rest) in [
            ("/models/abc/production/sync/v1/chat/completions", "v1/chat/completions"),
            ("/models/abc/production/sync/", ""),
            ("/models/abc/production/sync", ""),
            ("/models/abc/production/sync/a//b/", "a//b/"),
            ("/models/abc/production/sync/predict", "predict"),
        ] {
            assert_eq!(parse(None, path), target(model("abc"), Target::Production, sync(rest)), "{path}");
        }
        assert_eq!(
            parse(None, "/models/abc/environments/eu/sync/health"),
            target(model("abc"), Target::Environment("eu".into()), sync("health"))
        );
        assert_eq!(
            parse(None, "/models/abc/deployment/d1/sync/echo"),
            target(model("abc"), Target::Deployment("d1".into()), sync("echo"))
        );
        assert_eq!(
            parse(Some("model-abc.api.baseten.co"), "/development/sync/v1/models"),
            target(model("abc"), Target::Development, sync("v1/models"))
        );
        // Chains have no sync passthrough; other endpoints take no extra segments.
        assert_eq!(parse(None, "/chains/c1/production/sync/health"), None);
        assert_eq!(parse(None, "/models/abc/production/predict/extra"), None);
        assert_eq!(parse(None, "/models/abc/async_request/r1/extra"), None);
    }

    #[test]
    fn regional_environment_hosts() {
        let staging = || Target::Environment("staging".into());
        for (path, endpoint) in [
            ("/predict", Endpoint::Predict),
            ("/async_predict", Endpoint::AsyncPredict),
            ("/async_queue_status", Endpoint::QueueStatus),
            ("/wake", Endpoint::Wake),
            ("/sync/v1/chat/completions", sync("v1/chat/completions")),
            ("/sync", sync("")),
        ] {
            assert_eq!(
                parse(Some("model-abc-staging.api.baseten.co"), path),
                target(model("abc"), staging(), endpoint)
            );
        }
        let chain = Owner { kind: Kind::Chain, id: "c1".into() };
        for (path, endpoint) in [
            ("/run_remote", Endpoint::Predict),
            ("/async_run_remote", Endpoint::AsyncPredict),
            ("/async_queue_status", Endpoint::QueueStatus),
        ] {
            assert_eq!(parse(Some("chain-c1-staging.example:80"), path), target(chain.clone(), staging(), endpoint));
        }
        assert_eq!(
            parse(Some("model-abc-staging.x"), "/async_request/r1"),
            Some(Route::AsyncRequest { owner: model("abc"), request_id: "r1".into() })
        );
        // The label splits at the first `-`.
        assert_eq!(
            parse(Some("model-abc-eu-west.x"), "/predict"),
            target(model("abc"), Target::Environment("eu-west".into()), Endpoint::Predict)
        );
        // A target path on a regional model host is no route, nor a bare path on a plain host.
        assert_eq!(parse(Some("model-abc-staging.x"), "/production/predict"), None);
        assert_eq!(parse(Some("model-abc-staging.x"), "/environments/staging/predict"), None);
        assert_eq!(parse(Some("model-abc.x"), "/predict"), None);
        assert_eq!(parse(Some("model-abc-.x"), "/predict"), None);
        assert_eq!(parse(Some("model-abc-staging.x"), "/run_remote"), None);
        assert_eq!(parse(Some("chain-c1-staging.x"), "/predict"), None);
        assert_eq!(parse(Some("chain-c1-staging.x"), "/sync/health"), None);
        // A chain id may hold a `-` when the path names a target.
        assert_eq!(
            parse(Some("chain-demo-chain.localhost"), "/production/run_remote"),
            target(Owner { kind: Kind::Chain, id: "demo-chain".into() }, Target::Production, Endpoint::Predict)
        );
    }

    #[test]
    fn host_prefix_stands_for_a_host_header() {
        assert_eq!(
            parse(None, "/_host/model-abc-staging/sync/echo"),
            target(model("abc"), Target::Environment("staging".into()), sync("echo"))
        );
        assert_eq!(
            parse(Some("localhost:8788"), "/_host/model-abc/production/predict"),
            parse(None, "/models/abc/production/predict")
        );
        // It wins over the real Host header, and path form still wins over both.
        assert_eq!(
            parse(Some("model-xyz.local"), "/_host/model-abc/production/wake"),
            parse(None, "/models/abc/production/wake")
        );
        assert_eq!(parse(None, "/_host/other/models/abc/production/wake"), parse(None, "/models/abc/production/wake"));
        assert_eq!(parse(Some("model-abc.local"), "/_host/localhost/production/predict"), None);
        assert_eq!(parse(None, "/_host/model-abc"), None);
        assert_eq!(parse(None, "/_host/"), None);
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

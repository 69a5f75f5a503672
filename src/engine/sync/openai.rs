//! The gateway's own OpenAI-compatible API, one base URL for many models: `POST
//! /v1/chat/completions`, `/v1/completions` and `/v1/embeddings` go to the configured model
//! whose `openai_model` is the body's `model`, at its OpenAI-compatible base (a dedicated
//! deployment's `…/sync/v1`, or Baseten's Model APIs); `GET /v1/models` lists the models the
//! caller may use. Answers, streamed ones and errors included, pass as the upstream sent them.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::engine::access::keys;
use crate::engine::base::{json_response, Error, Operation, Subject};
use crate::engine::config::ApiKey;
use crate::engine::config::Upstream;
use crate::engine::surface::route::OpenAiEndpoint;
use crate::engine::sync::relay::Errors;
use crate::engine::{Engine, HttpClient, Outcome, Store};

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    pub(crate) async fn openai(
        &self,
        key: &ApiKey,
        origin: Option<&str>,
        endpoint: OpenAiEndpoint,
        request: Request<Bytes>,
    ) -> Result<Outcome<H::Body>, Error> {
        let path = match endpoint {
            OpenAiEndpoint::Models => {
                return Ok(Outcome::new(crate::engine::full(self.openai_models(key, origin)), None))
            }
            OpenAiEndpoint::Post(path) => path,
        };
        let body: Value = serde_json::from_slice(request.body())
            .map_err(|e| Error::MalformedJson { message: format!("request body is not JSON: {e}") })?;
        let name = body["model"].as_str().ok_or_else(|| Error::invalid("model", "is required"))?;
        let (id, upstream) =
            self.openai_model(name).ok_or_else(|| Error::UnknownSubject { kind: "model", id: name.to_owned() })?;
        keys::authorize(key, Operation::Sync, &Subject::Model(id.to_owned()), origin)?;
        let base = upstream.openai.as_ref().map_or("", |o| o.base_url.as_str()).trim_end_matches('/');
        let url = format!("{base}/{path}");
        self.relay(upstream, Method::POST, url, request.map(H::stream_of), Errors::Unchanged).await
    }

    /// The configured model (its gateway id) whose OpenAI-compatible name is `name`.
    fn openai_model(&self, name: &str) -> Option<(&str, &Upstream)> {
        self.config
            .models
            .iter()
            .find(|(_, u)| u.openai.as_ref().is_some_and(|o| o.model == name))
            .map(|(id, u)| (id.as_str(), u))
    }

    /// `GET /v1/models`: OpenAI's list, of the models this caller may call.
    fn openai_models(&self, key: &ApiKey, origin: Option<&str>) -> Response<Bytes> {
        let data: Vec<Value> = self
            .config
            .models
            .iter()
            .filter_map(|(id, u)| Some((id, u.openai.as_ref()?)))
            .filter(|(id, _)| keys::authorize(key, Operation::Sync, &Subject::Model((*id).clone()), origin).is_ok())
            .map(|(_, o)| json!({"id": o.model, "object": "model", "created": 0, "owned_by": "edge-predict"}))
            .collect();
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }
}

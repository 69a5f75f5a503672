//! One request through the engine: admitted once from its head (route, caller, scope,
//! announced size, CORS), its body checked, placed, then its route's handler, with CORS on
//! every answer, refusals included.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};

use crate::engine::ports::kv::Counts;
use crate::engine::surface::cors::{add_cors, preflight, with_cors};
use crate::engine::surface::route::long_poll_wait;
use crate::engine::{
    access, base, config, jobs, ports, webhooks, Admission, Admitted, Ctx, Engine, Error, HttpClient, Outcome,
    Placement, Route, Store, Timer, Timestamp, Trace, MAX_REQUEST_BODY, NO_BODY_LIMIT, SYNC_BODY_LIMIT,
};
use crate::engine::{full, header_str};

/// An answer with its request's id (the gateway's span in the request's trace).
fn traced<B>(mut outcome: Outcome<B>, trace: &Trace) -> Outcome<B> {
    add_request_id(outcome.response.headers_mut(), trace);
    outcome
}

pub(crate) fn add_request_id(headers: &mut HeaderMap, trace: &Trace) {
    if let Ok(id) = HeaderValue::from_str(&trace.span_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// The admission of a request, from its head alone: the only place a request's route is
    /// parsed and its caller authenticated. Every route but the preflight needs valid
    /// credentials: a gateway key scoped to the route's operation, its model or chain and the
    /// request's origin, or for the inbox its job's URL and a signature header. A
    /// `Content-Length` must be within the route's limit: async submits
    /// `async_body_limit_bytes`, the OpenAI front door and the inbox [`MAX_REQUEST_BODY`], sync
    /// routes [`SYNC_BODY_LIMIT`] (streamed), routes that take no body a small bound, and a
    /// preflight none. Adapters check this before reading the body or touching a store, and
    /// read at most [`Admitted::body_limit`] bytes; so every refusal reads no body and touches
    /// no store. (The inbox's signature itself needs the body: [`Engine::check_body`].)
    ///
    /// The request's trace is decided here too, from its `traceparent` and `entropy` (its 16
    /// random bytes, the same wherever it is admitted): every answer to it, refusals included,
    /// names it (`X-Request-Id`).
    pub fn admit<B>(&self, request: &Request<B>, now: Timestamp, entropy: [u8; 16]) -> Admission {
        let headers = request.headers();
        let length = header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
        let route = match self.route(request) {
            Ok(route) => route,
            Err(e) => return Admission::Refuse(e),
        };
        let caller = match &route {
            Route::Preflight => Ok(None),
            Route::WebhookInbox { request_id, token } => {
                webhooks::inbox::check_inbox_url(self.config, request_id, token.as_deref()).and_then(|()| {
                    match header_str(headers, "x-baseten-signature") {
                        Some(_) => Ok(None),
                        None => Err(Error::BadSignature { message: "missing X-BASETEN-SIGNATURE header".to_owned() }),
                    }
                })
            }
            route => self.admit_caller(route, headers, now).map(Some),
        };
        let caller = match caller {
            Ok(caller) => caller,
            Err(e) => return Admission::Refuse(e),
        };
        let (limit, streamed) = match route {
            Route::Predict { .. } | Route::Sync { .. } | Route::WebSocket { .. } => (SYNC_BODY_LIMIT, true),
            Route::AsyncPredict { .. } => (self.config.async_body_limit, false),
            Route::OpenAi { .. } | Route::WebhookInbox { .. } => (MAX_REQUEST_BODY, false),
            Route::Status { .. }
            | Route::Cancel { .. }
            | Route::QueueStatus { .. }
            | Route::Wake { .. }
            | Route::MintToken
            | Route::Sweep
            | Route::StoreCheck => (NO_BODY_LIMIT, false),
            Route::Preflight => (0, false),
        };
        if length.is_some_and(|n| n > limit) {
            return Admission::Refuse(Error::PayloadTooLarge { limit });
        }
        let origin = header_str(headers, header::ORIGIN.as_str()).map(str::to_owned);
        // Whether the origin may read the answer, from the caller already found.
        let cors =
            origin.as_deref().is_some_and(|o| self.origin_allowed(o, route == Route::Preflight, caller.as_ref()));
        let trace = Trace::of(headers, entropy);
        let admitted = Admitted { route, caller, origin, cors, body_limit: limit, body_checked: false, trace };
        if streamed {
            Admission::Stream(admitted)
        } else {
            Admission::Read(admitted)
        }
    }

    /// The caller of a route that needs a key, scoped to the route's operation, the model or
    /// chain its path names and the request's origin.
    fn admit_caller(&self, route: &Route, headers: &HeaderMap, now: Timestamp) -> Result<config::ApiKey, Error> {
        let key = access::keys::authenticate(self.config, headers, now)?;
        let origin = header_str(headers, header::ORIGIN.as_str());
        let op = route.operation().ok_or(Error::NotFound { what: "route".to_owned() })?;
        match route.subject() {
            Some(subject) => access::keys::authorize(&key, op, subject, origin)?,
            None => access::keys::authorize_operation(&key, op, origin)?,
        }
        Ok(key)
    }

    /// The read body against what the head admitted: within [`Admitted::body_limit`], and for an
    /// inbox delivery its signature, checked without any store, so a forged delivery never
    /// reaches the job's state. Adapters call it before placing the request; a request whose
    /// body was not checked here is checked by [`Engine::handle`].
    pub fn check_body(&self, admitted: &mut Admitted, request: &Request<Bytes>) -> Result<(), Error> {
        if request.body().len() > admitted.body_limit {
            return Err(Error::PayloadTooLarge { limit: admitted.body_limit });
        }
        if let Route::WebhookInbox { .. } = admitted.route {
            webhooks::inbox::verify_signature(self.config, request)?;
        }
        admitted.body_checked = true;
        Ok(())
    }

    /// Where an admitted request must run, decided from its route (and, for a token minted
    /// bound to a job, the `request_id` in its body). A submit's request id is decided here:
    /// the same `entropy` given to [`Engine::handle`] yields the same id, and an
    /// `Idempotency-Key` always yields the same id for the same key.
    pub fn placement(&self, admitted: &Admitted, request: &Request<Bytes>, entropy: [u8; 16]) -> Placement {
        match (&admitted.route, &admitted.caller) {
            (Route::AsyncPredict { .. }, Some(key)) => {
                // An id secret this host cannot read: any place, whose submit answers that error.
                let id = jobs::submit::new_request_id(self.config, key, request.headers(), entropy);
                Placement::Job(id.unwrap_or_else(|_| hex::encode(entropy)))
            }
            (
                Route::Status { request_id, .. }
                | Route::Cancel { request_id, .. }
                | Route::WebhookInbox { request_id, .. },
                _,
            ) if base::is_request_id(request_id) => Placement::Job(request_id.clone()),
            (Route::MintToken, _) => {
                access::tokens::bound_request_id(request.body()).map_or(Placement::Stateless, Placement::Job)
            }
            (Route::Sweep, _) => Placement::Store,
            // On scratch keys of its own, in a place the randomness picks (on Workers, one of
            // the jobs' objects): a store as the jobs there have it.
            (Route::StoreCheck, _) => Placement::Job(hex::encode(entropy)),
            _ => Placement::Stateless,
        }
    }

    /// What a request addresses, from its method, `Host` (or URI authority) and path.
    fn route<B>(&self, request: &Request<B>) -> Result<Route, Error> {
        let host = header_str(request.headers(), header::HOST.as_str()).or(request.uri().host());
        Route::parse_with(request.method(), host, request.uri().path(), &|s| self.config.upstream(s).is_ok())
    }

    /// The answer to a request refused before it was admitted: its error as JSON, with CORS as
    /// for any answer. (After admission, [`Admitted::refusal`].)
    pub fn refusal<B>(&self, request: &Request<B>, error: &Error, now: Timestamp) -> Response<Bytes> {
        let mut response = error.to_response();
        if let Some(origin) = header_str(request.headers(), header::ORIGIN.as_str()) {
            let allowed = self.cors_allowed(request, origin, now);
            add_cors(response.headers_mut(), origin, allowed);
        }
        response
    }

    /// The whole calling order for a request whose body is in hand, in a place with one store
    /// and the caller's counters beside it (the `inference` component, tests): admit, take
    /// what the caller's limits count in `counts`, check the body, handle.
    pub async fn serve<C: Counts, T: Timer>(
        &self,
        request: Request<Bytes>,
        ctx: Ctx,
        counts: &C,
        timer: &T,
    ) -> Outcome<H::Body> {
        let mut admitted = match self.admit(&request, ctx.now, ctx.entropy) {
            Admission::Refuse(e) => return Outcome::new(full(self.refusal(&request, &e, ctx.now)), None),
            Admission::Read(admitted) | Admission::Stream(admitted) => admitted,
        };
        if let Err(e) = admitted.spend(ctx.now).take(counts, timer).await {
            return Outcome::new(full(admitted.refusal(&e)), None);
        }
        if let Err(e) = self.check_body(&mut admitted, &request) {
            return Outcome::new(full(admitted.refusal(&e)), None);
        }
        self.handle(&admitted, request, ctx).await
    }

    /// Handles one admitted request ([`Admission::Read`]). Never panics on any input; every
    /// refusal is a 4xx with `code` and `message`, and a refused request changes nothing in
    /// the store.
    ///
    /// Its time is `ctx.now` throughout; a host that has a clock gives it with
    /// [`Engine::handle_held`], so that a sweep (`POST /_sweep`) claims work at the time it
    /// reaches it.
    pub async fn handle(&self, admitted: &Admitted, request: Request<Bytes>, ctx: Ctx) -> Outcome<H::Body> {
        self.handle_timed(admitted, request, ctx, &|| ctx.now).await
    }

    pub(crate) async fn handle_timed(
        &self,
        admitted: &Admitted,
        request: Request<Bytes>,
        ctx: Ctx,
        clock: &dyn Fn() -> Timestamp,
    ) -> Outcome<H::Body> {
        let engine = self.traced(&admitted.trace);
        let result = match admitted.body_checked {
            true => engine.dispatch(admitted, request, ctx, clock).await,
            false => {
                let mut checked = admitted.clone();
                match engine.check_body(&mut checked, &request) {
                    Ok(()) => engine.dispatch(&checked, request, ctx, clock).await,
                    Err(e) => Err(e),
                }
            }
        };
        traced(with_cors(result, admitted.origin.as_deref(), admitted.cors), &admitted.trace)
    }

    /// Handles a sync route ([`Admission::Stream`]) whose body streams to the upstream as it
    /// arrives. Same guarantees as [`Engine::handle`].
    pub async fn handle_stream(&self, admitted: &Admitted, request: Request<H::Stream>) -> Outcome<H::Body> {
        let engine = self.traced(&admitted.trace);
        let result = match &admitted.route {
            Route::WebSocket { subject, target } => engine.websocket(subject, target, request).await,
            route @ (Route::Predict { .. } | Route::Sync { .. }) => engine.pass(route, request).await,
            _ => Err(Error::NotFound { what: "a sync route".to_owned() }),
        };
        traced(with_cors(result, admitted.origin.as_deref(), admitted.cors), &admitted.trace)
    }

    async fn dispatch(
        &self,
        admitted: &Admitted,
        request: Request<Bytes>,
        ctx: Ctx,
        clock: &dyn Fn() -> Timestamp,
    ) -> Result<Outcome<H::Body>, Error> {
        let done = |response: Response<Bytes>| Ok(Outcome::new(full(response), None));
        let origin = admitted.origin.as_deref();
        let key = match (&admitted.route, &admitted.caller) {
            (Route::Preflight, _) => return done(preflight(admitted.cors)),
            (Route::WebhookInbox { request_id, .. }, _) => return self.inbox(request_id, &request, ctx).await,
            (_, Some(key)) => key,
            // Every other route was admitted with a caller.
            (_, None) => return Err(Error::Unauthorized { message: "no credentials".to_owned() }),
        };
        match &admitted.route {
            route @ (Route::Predict { .. } | Route::Sync { .. }) => self.pass(route, request.map(H::stream_of)).await,
            Route::WebSocket { subject, target } => self.websocket(subject, target, request.map(H::stream_of)).await,
            Route::OpenAi { endpoint } => self.openai(key, origin, *endpoint, request).await,
            Route::QueueStatus { subject, target } => done(self.queue_status(subject, target).await?),
            Route::Wake { subject, target } => done(self.wake(subject, target).await?),
            Route::AsyncPredict { subject, target } => {
                self.submit(key, subject.clone(), target.clone(), &request, ctx, clock).await
            }
            Route::Status { subject, request_id } => {
                let wait_ms = long_poll_wait(request.uri().query())?;
                self.status(key, origin, subject.as_ref(), request_id, ctx, wait_ms).await
            }
            Route::Cancel { subject, request_id } => {
                self.cancel(key, origin, subject.as_ref(), request_id, ctx.now).await
            }
            Route::MintToken => done(self.mint_token(key, &request, ctx.now, ctx.entropy).await?),
            Route::Sweep => {
                // The host's clock, not the request's: a long sweep claims each job's work at
                // the time it reaches it.
                let report = self.sweep(clock).await;
                self.note_wake(report.wake_at).await;
                let body = serde_json::json!({
                    "ran": report.ran, "processed": report.processed, "failed": report.failed, "deleted": report.deleted,
                    "parked": report.parked,
                    "next_sweep_at": report.wake_at.map(Timestamp::rfc3339),
                });
                done(base::json_response(StatusCode::OK, &body))
            }
            Route::StoreCheck => {
                let scratch = format!("check/{}/", hex::encode(ctx.entropy));
                let (status, body) = match ports::store_contract::check(self.store, &scratch).await {
                    Ok(()) => (StatusCode::OK, serde_json::json!({"kept": true})),
                    Err(promise) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({
                            "kept": false, "code": "STORE_CONTRACT_BROKEN", "error_code": "internal_baseten_error",
                            "message": format!("the store does not keep its contract: {promise}"),
                        }),
                    ),
                };
                done(base::json_response(status, &body))
            }
            Route::Preflight | Route::WebhookInbox { .. } => Err(Error::NotFound { what: "route".to_owned() }),
        }
    }
}

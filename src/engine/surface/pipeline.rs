//! One request through the engine: where it runs (placement), whether it is admitted from its
//! head alone (credentials, scope, announced size), then its route's handler, with CORS on
//! every answer, refusals included.

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};

use crate::engine::surface::cors::{add_cors, preflight, with_cors};
use crate::engine::surface::route::long_poll_wait;
use crate::engine::{
    access, base, config, jobs, webhooks, Admission, Ctx, Engine, Error, HttpClient, Outcome, Placement, Route, Store,
    Timestamp, MAX_REQUEST_BODY, NO_BODY_LIMIT, SYNC_BODY_LIMIT,
};
use crate::engine::{full, header_str};

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// Where `request` must run, decided from its head (and, for a token minted bound to a
    /// job, the `request_id` in its body). A submit's request id is decided here: the same
    /// `entropy` given to [`Engine::handle`] yields the same id, and an `Idempotency-Key`
    /// always yields the same id for the same key.
    pub fn placement(&self, request: &Request<Bytes>, now: Timestamp, entropy: [u8; 16]) -> Placement {
        match self.route(request) {
            Ok(Route::AsyncPredict { .. }) => {
                Placement::Job(jobs::submit::new_request_id(self.config, request.headers(), now, entropy))
            }
            Ok(
                Route::Status { request_id, .. }
                | Route::Cancel { request_id, .. }
                | Route::WebhookInbox { request_id, .. },
            ) if base::is_request_id(&request_id) => Placement::Job(request_id),
            Ok(Route::MintToken) => {
                access::tokens::bound_request_id(request.body()).map_or(Placement::Stateless, Placement::Job)
            }
            Ok(Route::Sweep) => Placement::Store,
            _ => Placement::Stateless,
        }
    }

    /// The admission of a request, from its head alone. Every route but the preflight needs
    /// valid credentials: a gateway key scoped to the route's operation, its model or chain
    /// and the request's origin, or for the inbox its job's URL and a signature header. A
    /// `Content-Length` must be within the route's limit: async submits
    /// `async_body_limit_bytes`, the OpenAI front door and the inbox [`MAX_REQUEST_BODY`], sync
    /// routes [`SYNC_BODY_LIMIT`] (streamed), routes that take no body a small bound, and a
    /// preflight none. Adapters check this before reading the body or touching a store, and
    /// read at most `body_limit` bytes; so every refusal reads no body and touches no store.
    /// (The inbox's signature itself needs the body: adapters verify it before touching job
    /// state, with [`Engine::verify_inbox_if_inbox`].)
    pub fn admit<B>(&self, request: &Request<B>, now: Timestamp) -> Admission {
        let length =
            header_str(request.headers(), header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
        let route = match self.route(request) {
            Ok(route) => route,
            Err(e) => return Admission::Refuse(e),
        };
        let refused = match &route {
            Route::Preflight => None,
            Route::WebhookInbox { request_id, token } => {
                webhooks::inbox::check_inbox_url(self.config, request_id, token.as_deref()).err().or_else(|| {
                    let signed = header_str(request.headers(), "x-baseten-signature").is_some();
                    (!signed).then(|| Error::BadSignature { message: "missing X-BASETEN-SIGNATURE header".to_owned() })
                })
            }
            route => self.admit_caller(route, request.headers(), now).err(),
        };
        if let Some(e) = refused {
            return Admission::Refuse(e);
        }
        let limit = match route {
            Route::Predict { .. } | Route::Sync { .. } | Route::WebSocket { .. } => {
                return match length {
                    Some(n) if n > SYNC_BODY_LIMIT => {
                        Admission::Refuse(Error::PayloadTooLarge { limit: SYNC_BODY_LIMIT })
                    }
                    _ => Admission::Stream { body_limit: SYNC_BODY_LIMIT },
                };
            }
            Route::AsyncPredict { .. } => self.config.async_body_limit,
            Route::OpenAi { .. } | Route::WebhookInbox { .. } => MAX_REQUEST_BODY,
            Route::Status { .. }
            | Route::Cancel { .. }
            | Route::QueueStatus { .. }
            | Route::Wake { .. }
            | Route::MintToken
            | Route::Sweep => NO_BODY_LIMIT,
            Route::Preflight => 0,
        };
        match length {
            Some(n) if n > limit => Admission::Refuse(Error::PayloadTooLarge { limit }),
            _ => Admission::Read { body_limit: limit },
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

    /// For an inbox delivery whose body has been read (any other request passes): its
    /// signature, checked without any store, so a forged delivery never reaches the job's state.
    pub fn verify_inbox_if_inbox(&self, request: &Request<Bytes>) -> Result<(), Error> {
        match self.route(request) {
            Ok(Route::WebhookInbox { .. }) => webhooks::inbox::verify_signature(self.config, request),
            _ => Ok(()),
        }
    }

    /// What a request addresses, from its method, `Host` (or URI authority) and path.
    pub(crate) fn route<B>(&self, request: &Request<B>) -> Result<Route, Error> {
        let host = header_str(request.headers(), header::HOST.as_str()).or(request.uri().host());
        Route::parse_with(request.method(), host, request.uri().path(), &|s| self.config.upstream(s).is_ok())
    }

    /// The answer to a refused request: its error as JSON, with CORS as for any answer.
    pub fn refusal<B>(&self, request: &Request<B>, error: &Error, now: Timestamp) -> Response<Bytes> {
        let mut response = error.to_response();
        if let Some(origin) = header_str(request.headers(), header::ORIGIN.as_str()) {
            let allowed = self.cors_allowed(request, origin, now);
            add_cors(response.headers_mut(), origin, allowed);
        }
        response
    }

    /// Handles one gateway request. Never panics on any input; every refusal is a 4xx with
    /// `code` and `message`, and a refused request changes nothing in the store.
    ///
    /// Its time is `ctx.now` throughout; a host that has a clock gives it with
    /// [`Engine::handle_held`], so that a sweep (`POST /_sweep`) claims work at the time it
    /// reaches it.
    pub async fn handle(&self, request: Request<Bytes>, ctx: Ctx) -> Outcome<H::Body> {
        self.handle_timed(request, ctx, &|| ctx.now).await
    }

    pub(crate) async fn handle_timed(
        &self,
        request: Request<Bytes>,
        ctx: Ctx,
        clock: &dyn Fn() -> Timestamp,
    ) -> Outcome<H::Body> {
        let origin = header_str(request.headers(), header::ORIGIN.as_str()).map(str::to_owned);
        let cors = origin.as_deref().is_some_and(|o| self.cors_allowed(&request, o, ctx.now));
        with_cors(self.dispatch(request, ctx, cors, clock).await, origin.as_deref(), cors)
    }

    /// Handles a sync route ([`Admission::Stream`]) whose body streams to the upstream as it
    /// arrives. Same guarantees as [`Engine::handle`].
    pub async fn handle_stream(&self, request: Request<H::Stream>, ctx: Ctx) -> Outcome<H::Body> {
        let origin = header_str(request.headers(), header::ORIGIN.as_str()).map(str::to_owned);
        let cors = origin.as_deref().is_some_and(|o| self.cors_allowed(&request, o, ctx.now));
        with_cors(self.dispatch_stream(request, ctx).await, origin.as_deref(), cors)
    }

    async fn dispatch_stream(&self, request: Request<H::Stream>, ctx: Ctx) -> Result<Outcome<H::Body>, Error> {
        let route = self.route(&request)?;
        let key = access::keys::authenticate(self.config, request.headers(), ctx.now)?;
        let origin = header_str(request.headers(), header::ORIGIN.as_str());
        match (&route, route.operation()) {
            (
                Route::Predict { subject, .. } | Route::Sync { subject, .. } | Route::WebSocket { subject, .. },
                Some(op),
            ) => {
                access::keys::authorize(&key, op, subject, origin)?;
            }
            _ => return Err(Error::NotFound { what: "a sync route".to_owned() }),
        }
        match &route {
            Route::WebSocket { subject, target } => self.websocket(subject, target, request).await,
            _ => self.pass(&route, request).await,
        }
    }

    async fn dispatch(
        &self,
        request: Request<Bytes>,
        ctx: Ctx,
        cors: bool,
        clock: &dyn Fn() -> Timestamp,
    ) -> Result<Outcome<H::Body>, Error> {
        let route = self.route(&request)?;
        let done = |response: Response<Bytes>| Ok(Outcome::new(full(response), None));
        match route {
            Route::Preflight => done(preflight(cors)),
            Route::WebhookInbox { request_id, token } => self.inbox(&request_id, token.as_deref(), &request, ctx).await,
            route => {
                let key = access::keys::authenticate(self.config, request.headers(), ctx.now)?;
                let key = &key;
                let origin = header_str(request.headers(), header::ORIGIN.as_str());
                let op = route.operation().ok_or(Error::NotFound { what: "route".to_owned() })?;
                match route {
                    Route::Predict { ref subject, .. } | Route::Sync { ref subject, .. } => {
                        access::keys::authorize(key, op, subject, origin)?;
                        self.pass(&route, request.map(H::stream_of)).await
                    }
                    Route::WebSocket { ref subject, ref target } => {
                        access::keys::authorize(key, op, subject, origin)?;
                        self.websocket(subject, target, request.map(H::stream_of)).await
                    }
                    Route::OpenAi { endpoint } => {
                        access::keys::authorize_operation(key, op, origin)?;
                        let origin = origin.map(str::to_owned);
                        self.openai(key, origin.as_deref(), endpoint, request).await
                    }
                    Route::QueueStatus { subject, target } => {
                        access::keys::authorize(key, op, &subject, origin)?;
                        done(self.queue_status(&subject, &target).await?)
                    }
                    Route::Wake { subject, target } => {
                        access::keys::authorize(key, op, &subject, origin)?;
                        done(self.wake(&subject, &target).await?)
                    }
                    Route::AsyncPredict { subject, target } => {
                        access::keys::authorize(key, op, &subject, origin)?;
                        self.submit(key, subject, target, &request, ctx, clock).await
                    }
                    Route::Status { subject, request_id } => {
                        let wait_ms = long_poll_wait(request.uri().query())?;
                        self.status(key, origin, subject.as_ref(), &request_id, ctx, wait_ms).await
                    }
                    Route::Cancel { subject, request_id } => {
                        self.cancel(key, origin, subject.as_ref(), &request_id, ctx.now).await
                    }
                    Route::MintToken => {
                        access::keys::authorize_operation(key, op, origin)?;
                        done(self.mint_token(key, &request, ctx.now, ctx.entropy).await?)
                    }
                    Route::Sweep => {
                        access::keys::authorize_operation(key, op, origin)?;
                        // The host's clock, not the request's: a long sweep claims each job's
                        // work at the time it reaches it.
                        let report = self.sweep(clock).await;
                        self.note_wake(report.wake_at).await;
                        let body = serde_json::json!({
                            "ran": report.ran, "processed": report.processed, "failed": report.failed, "deleted": report.deleted,
                            "parked": report.parked,
                            "next_sweep_at": report.wake_at.map(Timestamp::rfc3339),
                        });
                        done(base::json_response(StatusCode::OK, &body))
                    }
                    Route::Preflight | Route::WebhookInbox { .. } => Err(Error::NotFound { what: "route".to_owned() }),
                }
            }
        }
    }
}

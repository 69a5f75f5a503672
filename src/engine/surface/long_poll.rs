//! The long-poll: `GET /async_request/{id}?wait=N` held until the job ends or the wait runs
//! out, asking again at the engine's `hold_until`, on the adapter's [`Timer`].

use bytes::Bytes;
use http::Request;

use crate::engine::{Admitted, Ctx, Engine, HttpClient, Outcome, Store, Timer, Timestamp};

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// [`Engine::handle`], holding a long-poll (`GET /async_request/{id}?wait=N`, N up to 30
    /// seconds) open until the job ends or the wait runs out, asking again at the engine's
    /// `hold_until` and sleeping with `timer` in between. For adapters that can hold a
    /// connection; every other request is answered at once. The request was admitted once, on
    /// arrival: a caller admitted then stays admitted for the hold (at most 30 seconds).
    pub async fn handle_held<T: Timer>(
        &self,
        admitted: &Admitted,
        request: Request<Bytes>,
        entropy: [u8; 16],
        timer: &T,
    ) -> Outcome<H::Body> {
        let received_at = timer.now();
        let (parts, body) = request.into_parts();
        let mut wake_at: Option<Timestamp> = None;
        loop {
            let mut again = Request::new(body.clone());
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.headers_mut() = parts.headers.clone();
            let ctx = Ctx { now: timer.now(), entropy, received_at };
            let outcome = self.handle_timed(admitted, again, ctx, &|| timer.now()).await;
            // Every wake-up asked for on the way is kept, not only the last one.
            wake_at = match (wake_at, outcome.wake_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match outcome.hold_until {
                Some(at) => timer.sleep_until(at).await,
                None => return Outcome { wake_at, ..outcome },
            }
        }
    }
}

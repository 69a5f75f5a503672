//! Paced streaming bodies and their test hooks.
//!
//! A streamed answer is a [`Script`]: pieces sent before the tokens (an SSE
//! role event), the tokens themselves (one piece each), and pieces sent after
//! them (the finish event, usage, `[DONE]`). Each token waits
//! `Config::token_interval` first. Two hooks, named in the request, let tests
//! observe a stream mid-flight:
//!
//! * `hold: "<name>"`: once the first token has been handed to hyper (and, as
//!   the body then has nothing more ready, flushed), the stream waits until
//!   [`Streams::release`] opens the gate of that name. Gates stay open once
//!   released, so a release before the wait counts. The server's shutdown ends
//!   a held stream (its body then ends with an error). [`Streams::held`]
//!   counts the streams waiting at a gate, so a test can see a hold happen.
//! * `cut_after: n`: after `n` tokens the body ends with an error, so hyper
//!   drops the connection mid-body: the client sees an incomplete chunked body
//!   (no terminating chunk, no `[DONE]`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a streamed answer sends.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub head: Vec<Bytes>,
    pub tokens: Vec<Bytes>,
    pub tail: Vec<Bytes>,
}

/// The test hooks of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Hooks {
    pub hold: Option<String>,
    pub cut_after: Option<u64>,
}

/// A request field that is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl Hooks {
    /// Reads `hold` (a string) and `cut_after` (a non-negative integer) of a request object.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, FieldError> {
        let hold = match obj.get("hold") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(v) => return Err(FieldError { field: "hold", message: format!("hold must be a string, got {v}") }),
        };
        let cut_after = match obj.get("cut_after") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| FieldError {
                field: "cut_after",
                message: format!("cut_after must be a non-negative integer, got {v}"),
            })?),
        };
        Ok(Self { hold, cut_after })
    }
}

/// Token pacing and the hold gates, shared by all requests.
#[derive(Debug)]
pub(crate) struct Streams {
    interval: Duration,
    gates: Mutex<HashMap<String, watch::Sender<bool>>>,
    token: CancellationToken,
}

impl Streams {
    pub fn new(interval: Duration, token: CancellationToken) -> Self {
        Self { interval, gates: Mutex::default(), token }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.gates.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens the gate `name` for good: held streams on it go on, later ones do not wait.
    pub fn release(&self, name: &str) {
        self.lock().entry(name.to_owned()).or_insert_with(|| watch::channel(false).0).send_replace(true);
    }

    fn gate(&self, name: &str) -> watch::Sender<bool> {
        self.lock().entry(name.to_owned()).or_insert_with(|| watch::channel(false).0).clone()
    }

    /// How many streams wait at the gate `name` right now.
    pub fn held(&self, name: &str) -> usize {
        self.lock().get(name).map_or(0, watch::Sender::receiver_count)
    }

    /// A body that plays `script` with pacing and `hooks`.
    pub fn body(&self, script: Script, hooks: Hooks) -> Body {
        let mut pieces = VecDeque::new();
        pieces.extend(script.head.into_iter().map(Piece::Data));
        pieces.extend(script.tokens.into_iter().map(Piece::Token));
        pieces.extend(script.tail.into_iter().map(Piece::Data));
        let player = Player {
            pieces,
            interval: self.interval,
            hold: hooks.hold.map(|name| self.gate(&name)),
            cut_after: hooks.cut_after,
            sent: 0,
            after_token: false,
            finished: false,
            shutdown: self.token.clone(),
        };
        Body::from_stream(futures_util::stream::unfold(player, Player::step))
    }
}

#[derive(Debug)]
enum Piece {
    Data(Bytes),
    Token(Bytes),
}

/// The state of one streamed body.
#[derive(Debug)]
struct Player {
    pieces: VecDeque<Piece>,
    interval: Duration,
    /// The gate to wait at after the first token (subscribed only while waiting).
    hold: Option<watch::Sender<bool>>,
    cut_after: Option<u64>,
    /// Tokens sent so far.
    sent: u64,
    /// The last piece sent was a token (its hooks are still due).
    after_token: bool,
    finished: bool,
    shutdown: CancellationToken,
}

type Item = Result<Bytes, std::io::Error>;

impl Player {
    /// The next piece, or the error that ends the body; `None` once done.
    async fn step(mut self) -> Option<(Item, Self)> {
        if self.finished {
            return None;
        }
        if std::mem::take(&mut self.after_token) && self.sent == 1 {
            if let Some(gate) = self.hold.take() {
                if !self.wait(gate).await {
                    return self.fail("the server is shutting down");
                }
            }
        }
        let next_is_token = matches!(self.pieces.front(), Some(Piece::Token(_)));
        if self.cut_after == Some(self.sent) && (self.sent > 0 || next_is_token) {
            // Let hyper flush what it has before the error drops the connection:
            // a body that is not ready makes it flush.
            tokio::task::yield_now().await;
            return self.fail("cut_after: the test hook cut the response");
        }
        let bytes = match self.pieces.pop_front()? {
            Piece::Data(bytes) => bytes,
            Piece::Token(bytes) => {
                if !self.interval.is_zero() {
                    tokio::time::sleep(self.interval).await;
                }
                self.sent += 1;
                self.after_token = true;
                bytes
            }
        };
        Some((Ok(bytes), self))
    }

    /// Waits for the gate to open; `false` if the server shut down first.
    async fn wait(&self, gate: watch::Sender<bool>) -> bool {
        let mut gate = gate.subscribe();
        tokio::select! {
            opened = gate.wait_for(|open| *open) => opened.is_ok(),
            () = self.shutdown.cancelled() => false,
        }
    }

    fn fail(mut self, message: &str) -> Option<(Item, Self)> {
        self.finished = true;
        Some((Err(std::io::Error::other(message.to_owned())), self))
    }
}

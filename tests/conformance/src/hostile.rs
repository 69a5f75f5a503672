//! Peers that misbehave below the level of a status code, on raw TCP: webhook receivers that
//! announce a body and send a piece of it, or whose body never ends, and an upstream whose
//! body drips. Each reads the request, counts it, and answers in its misbehaving way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy)]
pub enum Misbehavior {
    /// `500` with `Content-Length: 1048576`, a few bytes of it, then the connection closes.
    TruncatedBody,
    /// `503`, chunked, and chunks for as long as the connection stays open.
    EndlessBody,
    /// `201` with `Content-Length: 1048576`, then one byte a second for as long as the
    /// connection stays open: no gap between bytes is long, the body is never done.
    DrippingBody,
}

#[derive(Debug)]
pub struct HostileReceiver {
    port: u16,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HostileReceiver {
    pub async fn start(misbehavior: Misbehavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("a bound port").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let mut stream = stream;
                // An error is the gateway going away, which ends the exchange either way.
                tokio::spawn(async move { drop(read_request(&mut stream, misbehavior, &counter).await) });
            }
        });
        Self { port, requests, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Its origin, to configure as a model's upstream.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Deliveries read whole so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HostileReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, then `Content-Length` bytes), counts it, and misbehaves.
async fn read_request(stream: &mut TcpStream, misbehavior: Misbehavior, count: &AtomicUsize) -> std::io::Result<()> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&buf[..n]);
    }
    count.fetch_add(1, Ordering::SeqCst);
    match misbehavior {
        Misbehavior::TruncatedBody => {
            let answer = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                          content-length: 1048576\r\n\r\n{\"error\": \"trunc";
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        }
        Misbehavior::DrippingBody => {
            let head = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                        content-length: 1048576\r\n\r\n{";
            stream.write_all(head.as_bytes()).await?;
            // Until the gateway closes the connection (a write then fails).
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                stream.write_all(b" ").await?;
            }
        }
        Misbehavior::EndlessBody => {
            let head = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            // Until the gateway closes the connection (a write then fails).
            loop {
                stream.write_all(chunk.as_bytes()).await?;
            }
        }
    }
}

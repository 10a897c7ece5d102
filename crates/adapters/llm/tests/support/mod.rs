//! A fake model server on 127.0.0.1 for the client tests: a raw TCP listener that
//! answers each connection with the next scripted [`Reply`], records what it was sent,
//! and can write a body a few bytes at a time, go silent mid-stream, or hang up
//! without finishing. Raw TCP rather than a web framework, because these are exactly
//! the byte-level misbehaviours a framework would smooth over.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_content::{
    ChatChunk, ChatMessage, ChatRequest, ChatRole, ChatStream, FinishReason, ModelParameters,
    ProviderError, TokenUsage,
};
use trellis_kernel::{TenantCtx, TenantId};
use trellis_llm::{RetryPolicy, Timeouts};
use trellis_tenancy::LlmProvider;

/// How the fake writes a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pieces {
    /// All at once.
    Whole,
    /// In HTTP chunks of 1 to 7 bytes (pseudo-random, seeded: reproducible), each
    /// flushed on its own: the client's reads see the body split everywhere, inside
    /// UTF-8 characters and `\r\n` included.
    Tiny,
}

/// How the fake ends a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// With the terminating zero-length chunk: a clean end of the HTTP body.
    Clean,
    /// By closing the connection mid-body: the client sees the transfer break.
    HangUp,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub pieces: Pieces,
    pub ending: Ending,
    /// Before the status line, wait this long.
    pub delay_headers: Option<Duration>,
    /// After this many body bytes, go silent for this long.
    pub stall: Option<(usize, Duration)>,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            pieces: Pieces::Whole,
            ending: Ending::Clean,
            delay_headers: None,
            stall: None,
        }
    }

    /// A streamed answer, as `text/event-stream`.
    pub fn sse(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200, "text/event-stream; charset=utf-8", body)
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "application/json", body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn in_tiny_pieces(mut self) -> Self {
        self.pieces = Pieces::Tiny;
        self
    }

    pub fn hang_up(mut self) -> Self {
        self.ending = Ending::HangUp;
        self
    }

    pub fn stall_after(mut self, bytes: usize, silence: Duration) -> Self {
        self.stall = Some((bytes, silence));
        self
    }

    pub fn delay_headers(mut self, delay: Duration) -> Self {
        self.delay_headers = Some(delay);
        self
    }
}

/// What the fake was sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// Clients that closed the connection while the fake was stalling.
    hang_ups: AtomicUsize,
}

/// A running fake; it stops when the test's runtime does.
pub struct FakeServer {
    pub base_url: String,
    shared: Arc<Shared>,
}

impl FakeServer {
    /// Serves `script`, one reply per connection, in order; once it is used up every
    /// further request gets a 418 that no test expects.
    pub async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            seen: Mutex::new(Vec::new()),
            hang_ups: AtomicUsize::new(0),
        });
        let state = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    // A client that went away mid-reply is what some tests are about.
                    let _ = serve(socket, state).await;
                });
            }
        });
        Self { base_url, shared }
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// Waits (up to two seconds) for a client to close its connection during a
    /// stall; whether one did.
    pub async fn saw_hang_up(&self) -> bool {
        for _ in 0..200 {
            if self.shared.hang_ups.load(Ordering::SeqCst) > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

async fn serve(mut socket: TcpStream, state: Arc<Shared>) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let Some(seen) = read_request(&mut socket).await? else {
        return Ok(());
    };
    state.seen.lock().unwrap().push(seen);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::json(418, r#"{"error":{"message":"script used up"}}"#));
    if let Some(delay) = reply.delay_headers {
        tokio::time::sleep(delay).await;
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await?;

    let mut seed: u32 = 0x2545_f491;
    let mut written = 0;
    while written < reply.body.len() {
        let size = match reply.pieces {
            Pieces::Whole => reply.body.len() - written,
            Pieces::Tiny => {
                // xorshift: cheap, seeded, good enough to vary the cut points.
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                1 + (seed % 7) as usize
            }
        };
        let mut end = (written + size).min(reply.body.len());
        if let Some((at, _)) = reply.stall
            && written < at
            && end > at
        {
            end = at;
        }
        let piece = &reply.body[written..end];
        socket
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        socket.write_all(piece).await?;
        socket.write_all(b"\r\n").await?;
        socket.flush().await?;
        written = end;
        if let Some((at, silence)) = reply.stall
            && written == at
        {
            // Silent, but listening: a client that gives up closes the connection,
            // which shows here as the end of its request stream.
            let mut probe = [0u8; 1];
            tokio::select! {
                () = tokio::time::sleep(silence) => {}
                read = socket.read(&mut probe) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        state.hang_ups.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                }
            }
        }
        if reply.pieces == Pieces::Tiny {
            tokio::task::yield_now().await;
        }
    }
    match reply.ending {
        Ending::Clean => {
            socket.write_all(b"0\r\n\r\n").await?;
            socket.flush().await?;
        }
        Ending::HangUp => {}
    }
    socket.shutdown().await
}

/// Reads one request: head up to the blank line, then `content-length` bytes of body.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<Seen>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Seen {
        method,
        target,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Whatever",
    }
}

/// A base URL where nothing listens: connecting is refused at once.
pub async fn refused_base_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Tight timeouts and fast retries, so failing tests fail quickly.
pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        idle: Duration::from_secs(2),
        overall: Duration::from_secs(20),
    }
}

pub fn retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn ctx() -> TenantCtx {
    TenantCtx::system(TenantId::new())
}

pub fn request(provider: LlmProvider, model: &str) -> ChatRequest {
    ChatRequest {
        provider,
        model: model.into(),
        messages: vec![
            ChatMessage {
                role: ChatRole::System,
                content: "You are a concise assistant.".into(),
            },
            ChatMessage {
                role: ChatRole::User,
                content: "What does Rust's ownership model buy me?".into(),
            },
        ],
        parameters: ModelParameters::new(Some(0.2), None, Some(256)).unwrap(),
    }
}

/// Drains a stream, asserting it ends right after its `Finish` or `Error`.
pub async fn collect(mut stream: ChatStream) -> Vec<ChatChunk> {
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        let last = matches!(chunk, ChatChunk::Finish(_) | ChatChunk::Error(_));
        chunks.push(chunk);
        if last {
            assert!(
                stream.next().await.is_none(),
                "something followed the end: {chunks:?}"
            );
            break;
        }
    }
    chunks
}

/// The answer text of some chunks.
pub fn text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            ChatChunk::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The error a stream ended with.
pub fn error(chunks: &[ChatChunk]) -> &ProviderError {
    match chunks.last() {
        Some(ChatChunk::Error(e)) => e,
        other => panic!("the stream did not end with an error but {other:?}"),
    }
}

/// The usage and finish reason a well-formed stream ends with.
pub fn ending(chunks: &[ChatChunk]) -> (Option<TokenUsage>, FinishReason) {
    let finish = match chunks.last() {
        Some(ChatChunk::Finish(f)) => *f,
        other => panic!("the stream did not end with a finish but {other:?}"),
    };
    let usage = chunks.iter().rev().find_map(|c| match c {
        ChatChunk::Usage(u) => Some(*u),
        _ => None,
    });
    (usage, finish)
}

/// A provider error out of a failed `stream`/`complete` call.
pub fn provider_error(e: trellis_content::ContentError) -> ProviderError {
    match e {
        trellis_content::ContentError::Provider(p) => p,
        other => panic!("not a provider error: {other:?}"),
    }
}

/// `fixture` up to (not including) the first occurrence of `marker`.
pub fn cut_before(fixture: &str, marker: &str) -> String {
    let at = fixture.find(marker).unwrap();
    fixture[..at].to_owned()
}

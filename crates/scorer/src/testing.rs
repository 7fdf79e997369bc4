//! Test support (feature `testing`): an OpenAI chat-completions server on loopback (127.0.0.1, a
//! port chosen by the OS) whose replies a test scripts: content, status codes, headers such as
//! `Retry-After`, delays. It serves a bounded number of requests for at most 60 s, then stops by
//! itself, and keeps every request (headers and body) for the test to inspect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted HTTP reply.
#[derive(Debug, Clone)]
pub struct StubReply {
    /// HTTP status.
    pub status: u16,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    /// The body.
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl StubReply {
    /// A 200 whose assistant message is `text`.
    pub fn content(text: &str) -> Self {
        Self::raw(
            200,
            &serde_json::json!({"choices": [{"message": {"content": text}}]}).to_string(),
        )
    }

    /// Any status and body.
    pub fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: String::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

/// A running stub server.
#[derive(Debug, Clone)]
pub struct Stub {
    /// Base URL with the API prefix, e.g. `http://127.0.0.1:40123/v1`.
    pub url: String,
    /// Every request received: headers, a blank line, the body.
    pub requests: Arc<Mutex<Vec<String>>>,
}

/// Starts a server that answers request `n` (0-based, in arrival order) with `reply(n)`.
pub fn serve(
    max_requests: usize,
    reply: impl Fn(usize) -> StubReply + Send + Sync + 'static,
) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!(
        "http://{}/v1",
        listener.local_addr().expect("local address")
    );
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = requests.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let served = Arc::new(Mutex::new(0usize));
        for stream in listener.incoming() {
            if Instant::now() > deadline || *served.lock().unwrap() >= max_requests {
                break;
            }
            let Ok(stream) = stream else { continue };
            let (seen, served, reply) = (seen.clone(), served.clone(), reply.clone());
            // One thread per connection: clients keep several in flight.
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(read_half) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(read_half);
                let mut stream = stream;
                loop {
                    let (mut headers, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                        headers.push_str(&line);
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(format!("{headers}\n{}", String::from_utf8_lossy(&body)));
                        *served.lock().unwrap() += 1;
                        s.len() - 1
                    };
                    let r = reply(n);
                    std::thread::sleep(r.delay);
                    let resp = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{}",
                        r.status,
                        r.headers,
                        r.body.len(),
                        r.body
                    );
                    if stream.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Stub { url, requests }
}

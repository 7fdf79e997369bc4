//! The HTTP agent against a real OpenAI-schema server on loopback (127.0.0.1, port chosen by the
//! OS) that injects faults: replies slower than the timeout, 500s, 429 with Retry-After, garbage,
//! out-of-range scores. The server answers a bounded number of requests and stops by itself.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmedpo_scorer::http::HttpAgent;
use mmedpo_scorer::{Agent, Message, Protocol, ScoreRequest};

#[derive(Clone, Debug)]
enum Fault {
    Slow,
    Status(u16),
    TooMany,
    Garbage,
    Content(&'static str),
}

struct Server {
    url: String,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Serves at most `max_requests` requests for at most 60 s; unscripted requests get "0.5".
fn serve(max_requests: usize, slow: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let faults: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (f, s) = (faults.clone(), seen.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let served = Arc::new(Mutex::new(0usize));
        for stream in listener.incoming() {
            if Instant::now() > deadline || *served.lock().unwrap() >= max_requests {
                break;
            }
            let Ok(stream) = stream else { continue };
            let (f, s, served) = (f.clone(), s.clone(), served.clone());
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut headers = String::new();
                    let mut len = 0usize;
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
                    s.lock()
                        .unwrap()
                        .push(format!("{headers}\n{}", String::from_utf8_lossy(&body)));
                    *served.lock().unwrap() += 1;
                    let fault = f
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(Fault::Content("0.5"));
                    let (status, extra, payload) = match fault {
                        Fault::Slow => {
                            std::thread::sleep(slow);
                            (
                                200,
                                "",
                                r#"{"choices":[{"message":{"content":"0.1"}}]}"#.to_string(),
                            )
                        }
                        Fault::Status(c) => (c, "", r#"{"error":"injected"}"#.to_string()),
                        Fault::TooMany => (
                            429,
                            "Retry-After: 0\r\n",
                            r#"{"error":"slow down"}"#.to_string(),
                        ),
                        Fault::Garbage => (200, "", "<html>oops</html>".to_string()),
                        Fault::Content(c) => (
                            200,
                            "",
                            serde_json::json!({"choices": [{"message": {"content": c}}]})
                                .to_string(),
                        ),
                    };
                    let resp = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{payload}", payload.len());
                    if stream.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { url, faults, seen }
}

fn agent(url: &str, model: &str) -> HttpAgent {
    let mut a = HttpAgent::new(
        url,
        model,
        Some("MMEDPO_TEST_JUDGE_KEY"),
        Duration::from_millis(400),
    );
    a.backoff = Duration::from_millis(10);
    a
}

#[test]
fn timeouts_500s_and_429s_are_retried_and_the_key_is_sent_but_never_shown() {
    std::env::set_var("MMEDPO_TEST_JUDGE_KEY", "sk-secret-123");
    let server = serve(50, Duration::from_millis(900));
    server.faults.lock().unwrap().extend([
        Fault::Slow,
        Fault::Status(500),
        Fault::TooMany,
        Fault::Content("{\"score\": 0.7}"),
    ]);
    let a = agent(&server.url, "med42");
    assert!(!format!("{a:?}").contains("sk-secret-123"));
    let reply = a.complete(&[Message::user("score it")]).unwrap();
    assert_eq!(reply, "{\"score\": 0.7}");
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "one request per attempt");
    assert!(seen[3]
        .to_ascii_lowercase()
        .contains("authorization: bearer sk-secret-123"));
    assert!(seen[3].contains("\"model\":\"med42\""));
}

#[test]
fn client_errors_are_not_retried_and_exhausted_retries_are_errors() {
    let server = serve(50, Duration::from_millis(10));
    server.faults.lock().unwrap().extend([Fault::Status(400)]);
    let a = agent(&server.url, "m");
    let err = a.complete(&[Message::user("x")]).unwrap_err();
    assert!(err.contains("HTTP 400"), "{err}");
    assert_eq!(server.seen.lock().unwrap().len(), 1);
    server
        .faults
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(Fault::Status(503), 5));
    let err = a.complete(&[Message::user("x")]).unwrap_err();
    assert!(err.contains("HTTP 503"), "{err}");
    assert_eq!(server.seen.lock().unwrap().len(), 1 + 5);
}

#[test]
fn the_protocol_finishes_every_pair_through_faults() {
    let server = serve(200, Duration::from_millis(900));
    server.faults.lock().unwrap().extend([
        // Pair 1, agent 1: prose, then out of range (both corrected by the protocol's retries).
        Fault::Content("I think it is quite relevant"),
        Fault::Content("{\"score\": 9}"),
        Fault::Content("{\"score\": 0.8}"),
        // Agent 2: slower than the timeout (retried by the agent), then agrees.
        Fault::Slow,
        Fault::Content("0.8"),
        // Agent 3: 429 with Retry-After (retried), then agrees.
        Fault::TooMany,
        Fault::Content("0.8"),
        // Pair 2, agent 1: a garbage HTTP body: the turn is recorded as failed.
        Fault::Garbage,
    ]);
    let agents = [
        agent(&server.url, "med42-8b"),
        agent(&server.url, "med42-70b"),
        agent(&server.url, "biomistral"),
    ];
    let refs: Vec<&dyn Agent> = agents.iter().map(|a| a as &dyn Agent).collect();
    let protocol = Protocol::default();
    let req = ScoreRequest {
        question: "Is there a nodule?".into(),
        ground_truth: "Yes".into(),
        answer: "No.".into(),
    };
    let first = protocol.score(&refs, &req);
    assert_eq!(
        (first.score, first.consensus, first.rounds),
        (Some(0.8), true, 1),
        "{first:?}"
    );
    assert_eq!(first.turns[0].retries, 2);
    let second = protocol.score(&refs, &req);
    assert!(
        second.turns[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("malformed response")),
        "{second:?}"
    );
    // The failed turn breaks round 1's pass; round 2 agrees on the server's default 0.5.
    assert_eq!(
        (second.score, second.consensus, second.rounds),
        (Some(0.5), true, 2)
    );
    for _ in 0..3 {
        let o = protocol.score(&refs, &req);
        assert_eq!((o.score, o.consensus, o.rounds), (Some(0.5), true, 1));
    }
}

//! The HTTP agent against a real OpenAI-schema server on loopback (127.0.0.1, port chosen by the
//! OS) that injects faults: replies slower than the timeout, 500s, 429 with Retry-After, garbage,
//! out-of-range scores. The server answers a bounded number of requests and stops by itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmedpo_scorer::http::HttpAgent;
use mmedpo_scorer::testing::{self, StubReply};
use mmedpo_scorer::{Agent, Message, Protocol, ScoreRequest};

#[derive(Clone, Debug)]
enum Fault {
    Slow,
    Status(u16),
    TooMany,
    Garbage,
    Content(&'static str),
    Raw(u16, &'static str),
    Throttle,
}

struct Server {
    url: String,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Serves at most `max_requests` requests for at most 60 s; unscripted requests get "0.5".
fn serve(max_requests: usize, slow: Duration) -> Server {
    let faults: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
    let f = faults.clone();
    let stub = testing::serve(max_requests, move |_| {
        match f
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Fault::Content("0.5"))
        {
            Fault::Slow => StubReply {
                delay: slow,
                ..StubReply::content("0.1")
            },
            Fault::Status(c) => StubReply::raw(c, r#"{"error":"injected"}"#),
            Fault::TooMany => StubReply {
                headers: "Retry-After: 0\r\n".into(),
                ..StubReply::raw(429, r#"{"error":"slow down"}"#)
            },
            Fault::Garbage => StubReply::raw(200, "<html>oops</html>"),
            Fault::Content(c) => StubReply::content(c),
            Fault::Raw(status, body) => StubReply::raw(status, body),
            Fault::Throttle => StubReply {
                headers: "Retry-After: 60\r\n".into(),
                ..StubReply::raw(429, r#"{"error":"come back in a minute"}"#)
            },
        }
    });
    Server {
        url: stub.url,
        faults,
        seen: stub.requests,
    }
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
fn a_dead_server_opens_the_circuit_and_a_long_retry_after_spends_no_budget() {
    // A port nothing listens on: every connection is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let a = agent(&dead, "m");
    for _ in 0..3 {
        let err = a.complete(&[Message::user("x")]).unwrap_err();
        assert!(err.contains("request failed"), "{err}");
    }
    let t = std::time::Instant::now();
    let err = a.complete(&[Message::user("x")]).unwrap_err();
    assert!(
        err.contains("circuit open") && err.contains("the last 3 calls failed"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    // Retry-After: 60 exceeds the call's budget: the agent gives up at once instead of sleeping.
    let server = serve(50, Duration::from_millis(10));
    server.faults.lock().unwrap().extend([Fault::Throttle]);
    let a = agent(&server.url, "m");
    let t = std::time::Instant::now();
    let err = a.complete(&[Message::user("x")]).unwrap_err();
    assert!(
        err.contains("HTTP 429") && err.contains("gave up after"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_key_quoted_back_by_the_server_is_redacted() {
    std::env::set_var("MMEDPO_TEST_JUDGE_KEY", "sk-secret-123");
    let server = serve(50, Duration::from_millis(10));
    server.faults.lock().unwrap().extend([
        Fault::Raw(401, r#"{"error": "invalid api key sk-secret-123"}"#),
        Fault::Content("your key is sk-secret-123; score 0.5"),
    ]);
    let a = agent(&server.url, "m");
    let err = a.complete(&[Message::user("x")]).unwrap_err();
    assert!(
        err.contains("HTTP 401") && err.contains("<redacted>"),
        "{err}"
    );
    assert!(!err.contains("sk-secret-123"), "{err}");
    let reply = a.complete(&[Message::user("x")]).unwrap();
    assert_eq!(reply, "your key is <redacted>; score 0.5");
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

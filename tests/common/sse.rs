//! The one Server-Sent Events client of the tests: plain HTTP/1.1 (reqwest)
//! and the SSE format read by hand (lines, `event:`, `id:`, `data:`,
//! `retry:`, comments), independent of the gateway's encoder.

use std::time::Duration;

use serde_json::Value;

/// How long a test waits for an event it expects before it fails.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// One dispatched event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `event:`, or `message` when none was given.
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

pub struct SseClient {
    resp: reqwest::Response,
    buf: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
    /// The last `retry:` seen.
    pub retry: Option<u64>,
    /// Comment lines seen (heartbeats).
    pub comments: usize,
}

impl SseClient {
    /// GETs `url` with `headers`; the HTTP status and JSON body when it is
    /// not a 200 event stream.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<SseClient, (u16, Value)> {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("the gateway answers");
        let status = resp.status().as_u16();
        if status != 200 {
            return Err((status, resp.json().await.unwrap_or(Value::Null)));
        }
        Ok(SseClient {
            headers: resp.headers().clone(),
            resp,
            buf: Vec::new(),
            retry: None,
            comments: 0,
        })
    }

    /// Opens with a bearer token; panics when refused.
    pub async fn with_token(url: &str, token: &str) -> SseClient {
        let auth = format!("Bearer {token}");
        SseClient::open(url, &[("authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("{url} refused: {e:?}"))
    }

    /// The next event; panics after a wait. None when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(EVENT_WAIT, self.read_event())
            .await
            .expect("an event within the wait")
    }

    /// The next event within `wait`, if any.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.read_event())
            .await
            .ok()
            .flatten()
    }

    /// The next event named `name`, skipping others; panics when none comes.
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        loop {
            let e = self.next().await.expect("the stream is open");
            if e.event == name {
                return e;
            }
        }
    }

    async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8(line).expect("events are UTF-8"));
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }

    async fn read_event(&mut self) -> Option<SseEvent> {
        let (mut event, mut id, mut data): (Option<String>, Option<String>, Vec<String>) =
            (None, None, Vec::new());
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                if !data.is_empty() {
                    return Some(SseEvent {
                        event: event.unwrap_or_else(|| "message".into()),
                        id,
                        data: data.join("\n"),
                    });
                }
                (event, id) = (None, None);
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "event" => event = Some(value),
                "id" => id = Some(value),
                "data" => data.push(value),
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
    }
}

//! `graphq bench e2e --transport sse` and `graphq bench fanout --transport
//! sse`: the clients of [`super::ws`] over Server-Sent Events, commands as
//! HTTP requests. A small HTTP/1.1 client of its own (one keep-alive
//! connection for commands, one chunked event stream per client) keeps the
//! load generator as light as the WebSocket one.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::ws::{
    Outcomes, Pacer, SETUP_WAIT, Tally, WsBenchError, decode_op, operation_id_of, setup_timeout,
    sync_holds, wind_down,
};

/// What carries a bench client's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One WebSocket per client.
    #[default]
    Ws,
    /// An event stream per client, commands over HTTP.
    Sse,
}

/// `host:port` of a gateway URL (`ws://`, `http://` or bare).
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads a response head; returns the status and the headers (names in
/// lower case).
async fn read_head(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("not an HTTP response: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(bad("the response head ended early".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((status, headers));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

async fn connect(addr: &str) -> io::Result<BufReader<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(BufReader::with_capacity(4 * 1024, tcp))
}

/// One `text/event-stream` response, read event by event.
pub struct EventStream {
    r: BufReader<TcpStream>,
    /// Body bytes read but not yet parsed into events.
    buf: Vec<u8>,
    /// What is left of the current chunk (the body is chunked).
    chunk_left: usize,
}

impl EventStream {
    pub async fn open(addr: &str, path: &str) -> io::Result<EventStream> {
        let mut r = connect(addr).await?;
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        r.get_mut().write_all(head.as_bytes()).await?;
        let (status, _) = read_head(&mut r).await?;
        if status != 200 {
            return Err(bad(format!("event stream refused: HTTP {status}")));
        }
        Ok(EventStream {
            r,
            buf: Vec::new(),
            chunk_left: 0,
        })
    }

    /// The next event's name and data; None when the stream ended.
    pub async fn next(&mut self) -> io::Result<Option<(String, String)>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut name, mut data) = (String::from("message"), None::<String>);
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(data.map_or_else(|| v.to_string(), |d| d + "\n" + v));
                    }
                }
                // Comments (heartbeats) and `retry:` carry no data.
                if let Some(data) = data {
                    return Ok(Some((name, data)));
                }
                continue;
            }
            if self.chunk_left == 0 {
                let mut line = String::new();
                self.r.read_line(&mut line).await?;
                if line.trim().is_empty() {
                    // The CRLF after a chunk.
                    line.clear();
                    if self.r.read_line(&mut line).await? == 0 {
                        return Ok(None);
                    }
                }
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    return Ok(None);
                }
                self.chunk_left = size;
            }
            let mut part = vec![0u8; self.chunk_left.min(16 * 1024)];
            let n = self.r.read(&mut part).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&part[..n]);
            self.chunk_left -= n;
        }
    }
}

impl EventStream {
    /// Reads events until one that `wanted` picks (by name and data).
    async fn until(
        &mut self,
        mut wanted: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), WsBenchError> {
        loop {
            match self.next().await? {
                Some((name, data)) if wanted(&name, &data) => return Ok(()),
                Some(_) => {}
                None => return Err(WsBenchError::Protocol("stream ended before start".into())),
            }
        }
    }
}

/// One keep-alive connection for `POST …/command`, pipelined: requests are
/// written as they come (the gateway answers them, and queues the commands,
/// in order) and a task of its own reads the answers, as the WebSocket
/// client writes its commands without waiting for ACCEPTED.
pub struct Commands {
    w: tokio::net::tcp::OwnedWriteHalf,
    addr: String,
    token: String,
    answers: tokio::task::JoinHandle<()>,
}

impl Commands {
    /// With `tally`, each 202's arrival counts as its command's admission
    /// latency (from `started`).
    pub(super) async fn connect(
        addr: &str,
        token: &str,
        tally: Option<(Instant, Arc<Tally>)>,
    ) -> io::Result<Commands> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let answers = tokio::spawn(async move {
            let mut r = BufReader::with_capacity(4 * 1024, r);
            while let Ok((status, headers)) = read_head(&mut r).await {
                let len = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0usize);
                let mut answer = vec![0u8; len];
                if r.read_exact(&mut answer).await.is_err() {
                    break;
                }
                if status != 202 {
                    tracing::warn!(status, answer = %String::from_utf8_lossy(&answer), "bench command refused");
                } else if let Some((started, tally)) = &tally {
                    let now = started.elapsed().as_micros() as u64;
                    let text = String::from_utf8_lossy(&answer);
                    if let Some((_, t0)) = operation_id_of(&text).and_then(decode_op)
                        && let Ok(mut l) = tally.accepted.lock()
                    {
                        l.push(now.saturating_sub(t0));
                    }
                }
            }
        });
        Ok(Commands {
            w,
            addr: addr.to_string(),
            token: token.to_string(),
            answers,
        })
    }

    /// Sends a command; its answer is read (and a refusal logged) later.
    pub async fn post(&mut self, graph: &str, command: &Value) -> io::Result<()> {
        let body = command.to_string();
        let request = format!(
            "POST /api/v2/graphs/{graph}/command HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        self.w.write_all(request.as_bytes()).await
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        self.answers.abort();
    }
}

/// An e2e client over SSE: the same steps as the WebSocket one
/// (`ws::e2e_client`), with its graph's event stream for what it hears.
#[allow(clippy::too_many_arguments)]
pub(super) async fn e2e_client(
    i: usize,
    run: &str,
    addr: &str,
    token: &str,
    graph: &str,
    every: Duration,
    duration: Duration,
    started: Instant,
    tally: Arc<Tally>,
    ready: Arc<tokio::sync::Barrier>,
) -> Result<(), WsBenchError> {
    let setup = e2e_setup(i, run, addr, token, graph, (started, tally.clone())).await;
    // Every client reaches the start line once, set up or not: the run
    // starts when all have.
    ready.wait().await;
    let (mut events, mut commands) = setup?;
    let node = format!("n{i}");
    let tally_rx = tally.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut outcomes = Outcomes::new(i);
        loop {
            let event = tokio::select! {
                _ = &mut stop_rx => break,
                e = events.next() => e,
            };
            match event {
                Ok(Some((_, data))) => outcomes.frame(&data, started, &tally_rx),
                _ => break,
            }
        }
        outcomes.finish(&tally_rx);
    });
    let mut pacer = Pacer::start(i, every, duration, started, run, &node).await;
    while let Some(c) = pacer.next().await {
        commands.post(graph, &c).await?;
        tally
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    wind_down(&tally, stop_tx, reader).await;
    Ok(())
}

/// Opens a client's event stream and command connection and creates its
/// node.
async fn e2e_setup(
    i: usize,
    run: &str,
    addr: &str,
    token: &str,
    graph: &str,
    tally: (Instant, Arc<Tally>),
) -> Result<(EventStream, Commands), WsBenchError> {
    let path = format!("/api/v2/graphs/{graph}/events?clientVersion=0&token={token}");
    let mut events = EventStream::open(addr, &path).await?;
    // The SYNC first: a change made before it would be folded into it, and
    // the setup command's COMMAND_APPLIED never heard.
    let sync = tokio::time::timeout(SETUP_WAIT, events.until(|name, _| name == "SYNC"));
    sync.await.map_err(|_| setup_timeout("SYNC"))??;
    let mut commands = Commands::connect(addr, token, Some(tally)).await?;
    let init_op = format!("c{i}-init-{run}");
    let create = json!({"operationId": init_op, "type": "CREATE_NODE",
        "payload": {"node": {"id": format!("n{i}"), "position": {"x": 0, "y": 0}}}});
    commands.post(graph, &create).await?;
    // Its COMMAND_APPLIED, or a later SYNC that already holds it.
    let node = format!("n{i}");
    let mut syncs = 0;
    let outcome = events.until(|name, data| match name {
        "SYNC" => {
            syncs += 1;
            let sync = serde_json::from_str(data).unwrap_or(Value::Null);
            sync_holds(&sync, &init_op, &node)
        }
        "COMMAND_APPLIED" | "REVERT" => data.contains(init_op.as_str()),
        _ => false,
    });
    tokio::time::timeout(SETUP_WAIT, outcome)
        .await
        .map_err(|_| {
            setup_timeout(&format!(
                "the setup command's outcome ({syncs} more SYNC meanwhile)"
            ))
        })??;
    Ok((events, commands))
}

/// A fanout subscriber over SSE: waits for its SYNC (then counts as
/// connected), and hands each COMMAND_APPLIED's data to `on_applied` until
/// `done` fires or the stream ends.
pub(super) async fn fanout_subscriber(
    addr: &str,
    path: &str,
    connected: impl FnOnce(),
    mut on_applied: impl FnMut(&str),
    done: impl std::future::Future<Output = ()>,
) {
    let Ok(mut events) = EventStream::open(addr, path).await else {
        return;
    };
    loop {
        match events.next().await {
            Ok(Some((name, _))) if name == "SYNC" => break,
            Ok(Some(_)) => {}
            _ => return,
        }
    }
    connected();
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = &mut done => break,
            e = events.next() => match e {
                Ok(Some((name, data))) if name == "COMMAND_APPLIED" => on_applied(&data),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_address_is_read_from_any_url() {
        assert_eq!(authority("ws://127.0.0.1:3000"), "127.0.0.1:3000");
        assert_eq!(authority("http://127.0.0.1:3000/"), "127.0.0.1:3000");
        assert_eq!(authority("127.0.0.1:3000"), "127.0.0.1:3000");
    }
}

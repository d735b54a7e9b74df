//! The one WebSocket client of the tests: connects with a token (or is
//! refused with an HTTP status), sends JSON or raw frames, reads the server's
//! JSON frames with a timeout, and observes the close code. Hostile tests
//! that need bytes below WebSocket use raw TCP sockets instead.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for a frame it expects before it fails.
const FRAME_WAIT: Duration = Duration::from_secs(10);

pub struct Client {
    socket: Socket,
}

impl Client {
    /// Connects to `base` (`ws://host:port`) + `path_and_query`; panics when refused.
    pub async fn connect(base: &str, path_and_query: &str) -> Client {
        match Client::try_connect(base, path_and_query).await {
            Ok(c) => c,
            Err(status) => panic!("websocket upgrade of {path_and_query} refused: {status:?}"),
        }
    }

    /// Connects to `/ws` with `token`; panics when refused.
    pub async fn with_token(base: &str, token: &str) -> Client {
        Client::connect(base, &format!("/ws?token={token}")).await
    }

    /// Connects, or returns the HTTP status the upgrade was refused with
    /// (None when the connection failed before any HTTP answer).
    pub async fn try_connect(base: &str, path_and_query: &str) -> Result<Client, Option<u16>> {
        match tokio_tungstenite::connect_async(format!("{base}{path_and_query}")).await {
            Ok((socket, _)) => Ok(Client { socket }),
            Err(tungstenite::Error::Http(resp)) => Err(Some(resp.status().as_u16())),
            Err(_) => Err(None),
        }
    }

    /// Sends `v` as a text frame; panics when the socket is gone.
    pub async fn send(&mut self, v: Value) {
        self.try_send(&v).await.expect("the frame is sent");
    }

    /// Sends `v` as a text frame; an error when the socket is gone.
    pub async fn try_send(&mut self, v: &Value) -> Result<(), tungstenite::Error> {
        self.socket.send(Message::Text(v.to_string().into())).await
    }

    /// Sends any frame as it is: invalid text, binary, oversized.
    pub async fn send_raw(&mut self, m: Message) {
        self.socket.send(m).await.expect("the frame is sent");
    }

    /// The next JSON frame, heartbeats included, waiting as long as it
    /// takes; None once the socket is closed or broken. Cancel-safe, so it
    /// can be one branch of a `select!`.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("the server sends JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next JSON frame, heartbeats included; panics after 10 s or when
    /// the socket closes.
    pub async fn next_frame(&mut self) -> Value {
        tokio::time::timeout(FRAME_WAIT, self.recv())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
    }

    /// The next JSON frame that is not a HEARTBEAT.
    pub async fn next(&mut self) -> Value {
        self.next_matching(|v| v["type"] != "HEARTBEAT").await
    }

    /// The next frame for which `wanted` holds, skipping the others.
    pub async fn next_matching(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next_frame().await;
            if wanted(&v) {
                return v;
            }
        }
    }

    /// The next frame of the given type, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.next_matching(|v| v["type"] == kind).await
    }

    /// The close code the server sent, waiting at most `within`; frames
    /// before the close are skipped.
    pub async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match m {
                Ok(Message::Close(Some(f))) => return Some(f.code.into()),
                Ok(Message::Close(None)) => return Some(1005),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

//! A small WebSocket client for tests.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub socket: Socket,
}

impl Client {
    pub async fn connect(base: &str, path_and_query: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(format!("{base}{path_and_query}"))
            .await
            .expect("websocket connects");
        Client { socket }
    }

    pub async fn send(&mut self, v: Value) {
        self.socket
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.socket.send(m).await.unwrap();
    }

    /// The next JSON frame that is not a HEARTBEAT.
    pub async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("frame reads");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "HEARTBEAT" {
                    return v;
                }
            }
        }
    }

    /// The next frame of the given type, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// The close code the server sent, waiting at most `within`.
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

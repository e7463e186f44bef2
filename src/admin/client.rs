//! The CLI's HTTP client for the admin API (HTTP/1.1 on loopback).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ops::{OpError, OpErrorKind, Request as OpRequest};
use super::{ADDR_FILE, token_path};
use crate::config::Config;

pub struct AdminClient {
    addr: SocketAddr,
    token: String,
}

/// Where the CLI should send a command.
pub enum Reach {
    Server(AdminClient),
    /// Nothing answers at `addr`: work on the store directly.
    NoServer {
        addr: SocketAddr,
    },
}

impl AdminClient {
    /// Finds the running server's admin API, if one answers.
    pub async fn discover(config: &Config) -> anyhow::Result<Reach> {
        let data_dir = &config.server.data_dir;
        let addr = std::fs::read_to_string(data_dir.join(ADDR_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(config.listeners.admin);
        let connected =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await;
        if !matches!(connected, Ok(Ok(_))) {
            return Ok(Reach::NoServer { addr });
        }
        let token = read_token(data_dir)?;
        Ok(Reach::Server(AdminClient { addr, token }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs an operator command on the server.
    pub async fn run(&self, request: &OpRequest) -> Result<serde_json::Value, OpError> {
        self.call(
            Method::POST,
            "/v1/ops",
            Some(serde_json::to_value(request).expect("serialisable")),
        )
        .await
    }

    /// Sends a JSON request; a non-2xx answer becomes an error with the
    /// server's own message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, OpError> {
        self.exchange(method, path, body)
            .await
            .map_err(|e| match e.downcast::<OpError>() {
                Ok(op) => op,
                Err(other) => OpError {
                    kind: OpErrorKind::Internal,
                    error: format!("{other:#}"),
                },
            })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
            .await
            .context("the admin API did not answer within 60s")??;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            if status == StatusCode::UNAUTHORIZED {
                bail!(
                    "the admin API at {} refused the token in {TOKEN_HINT}",
                    self.addr
                );
            }
            return Err(match serde_json::from_slice::<OpError>(&bytes) {
                Ok(op) => op.into(),
                Err(_) => {
                    anyhow::anyhow!("admin API: {status}: {}", String::from_utf8_lossy(&bytes))
                }
            });
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

const TOKEN_HINT: &str = "the data folder's admin.token";

fn read_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .with_context(|| {
            format!(
                "a server is running, but its admin token {} cannot be read (run as the server's user)",
                path.display()
            )
        })
}

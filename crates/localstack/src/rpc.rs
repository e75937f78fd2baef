//! A small JSON-RPC-over-HTTP client (readiness checks, raw calls in tests) and
//! [`RangeLimitedRpc`], a proxy that refuses `eth_getLogs` over wide block ranges.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long one JSON-RPC request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON-RPC call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The endpoint URL is not a plain `http://host:port/...` URL.
    #[error("invalid JSON-RPC URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP request could not be made (connection refused, reset, ...).
    #[error("JSON-RPC request to {url} failed: {source}")]
    Transport {
        /// The endpoint.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within the request timeout.
    #[error("JSON-RPC request {method} to {url} timed out after {timeout:?}")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The method called ("batch" for a batch).
        method: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The server answered with a non-success HTTP status.
    #[error("JSON-RPC endpoint {url} answered HTTP {status}: {body}")]
    HttpStatus {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The answer is not a JSON-RPC response.
    #[error("JSON-RPC endpoint {url} sent an invalid response: {reason}")]
    InvalidResponse {
        /// The endpoint.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with a JSON-RPC error object.
    #[error("JSON-RPC {method} failed with code {code}: {message}")]
    Rpc {
        /// The method called.
        method: String,
        /// The JSON-RPC error code.
        code: i64,
        /// The error message.
        message: String,
    },
}

/// A minimal JSON-RPC client over HTTP/1.1 with connection reuse. For tests and readiness
/// checks only: the product's chain client is alloy in `anchormq-chain`.
#[derive(Debug, Clone)]
pub struct JsonRpcClient {
    url: String,
    uri: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    next_id: Arc<AtomicU64>,
}

impl JsonRpcClient {
    /// A client for `url` (`http://...`; `https` is not supported).
    pub fn new(url: &str) -> Result<Self, RpcError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| RpcError::InvalidUrl {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(RpcError::InvalidUrl {
                url: url.to_owned(),
                reason: "expected http://host:port".to_owned(),
            });
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            url: url.to_owned(),
            uri,
            client,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with `params` and returns its `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.post_json(&request, method).await?;
        take_result(&self.url, method, response)
    }

    /// Sends any JSON body (a single request or a batch array) and returns the parsed answer.
    pub async fn post_json(&self, body: &Value, method: &str) -> Result<Value, RpcError> {
        let (status, bytes) = self
            .post_bytes(Bytes::from(body.to_string()), method)
            .await?;
        if !status.is_success() {
            return Err(RpcError::HttpStatus {
                url: self.url.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| RpcError::InvalidResponse {
            url: self.url.clone(),
            reason: format!("not JSON: {e}"),
        })
    }

    /// Posts raw bytes and returns the HTTP status and body unchanged.
    pub(crate) async fn post_bytes(
        &self,
        body: Bytes,
        method: &str,
    ) -> Result<(StatusCode, Bytes), RpcError> {
        let request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| RpcError::InvalidUrl {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| RpcError::Transport {
                    url: self.url.clone(),
                    source: Box::new(e),
                })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| RpcError::Transport {
                    url: self.url.clone(),
                    source: Box::new(e),
                })?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| RpcError::Timeout {
                url: self.url.clone(),
                method: method.to_owned(),
                timeout: REQUEST_TIMEOUT,
            })?
    }
}

fn take_result(url: &str, method: &str, mut response: Value) -> Result<Value, RpcError> {
    if let Some(error) = response.get("error") {
        return Err(RpcError::Rpc {
            method: method.to_owned(),
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_owned(),
        });
    }
    response
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| RpcError::InvalidResponse {
            url: url.to_owned(),
            reason: "neither result nor error".to_owned(),
        })
}

/// Parses a JSON-RPC quantity ("0x1f") into a u64.
pub fn parse_quantity(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// A proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Binding the proxy's loopback listener failed.
    #[error("cannot bind a loopback port for the proxy: {0}")]
    Bind(#[source] std::io::Error),
    /// The upstream URL is unusable.
    #[error(transparent)]
    Upstream(#[from] RpcError),
    /// Re-binding the proxy's own port after `pause` failed (another process took it).
    #[error("cannot re-bind proxy port {port}: {source}")]
    Rebind {
        /// The proxy's port.
        port: u16,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// The JSON-RPC error answered for a refused `eth_getLogs`.
#[derive(Debug, Clone)]
pub struct RangeError {
    /// JSON-RPC error code (default -32005, "limit exceeded", as several providers use).
    pub code: i64,
    /// Error message; `{max}` is replaced by the limit.
    pub message: String,
}

impl Default for RangeError {
    fn default() -> Self {
        Self {
            code: -32005,
            message: "query exceeds max block range {max}".to_owned(),
        }
    }
}

#[derive(Debug, Default)]
struct RangeStats {
    http_requests: AtomicU64,
    /// HTTP requests still to be answered 429 Too Many Requests.
    rate_limit_next: AtomicU64,
    rate_limited: AtomicU64,
    calls_forwarded: AtomicU64,
    get_logs_refused: AtomicU64,
    get_logs_served: AtomicU64,
    served_ranges: Mutex<Vec<(u64, u64)>>,
    refused_ranges: Mutex<Vec<(u64, u64)>>,
}

struct RangeState {
    upstream: JsonRpcClient,
    max_range: u64,
    error: RangeError,
    stats: RangeStats,
    /// `eth_getLogs` answers leave out logs whose first topic is this (0x-hex, lower case).
    hidden_topic: Mutex<Option<String>>,
}

/// An HTTP JSON-RPC proxy in front of an upstream node (Anvil) that refuses `eth_getLogs`
/// calls spanning more than `max_range` blocks, the way hosted providers do, and forwards
/// everything else unchanged. Batches are split: refused items get an error, the rest are
/// forwarded as one batch. Stops on [`RangeLimitedRpc::shutdown`] or drop.
pub struct RangeLimitedRpc {
    addr: SocketAddr,
    state: Arc<RangeState>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RangeLimitedRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeLimitedRpc")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream.url())
            .field("max_range", &self.state.max_range)
            .finish()
    }
}

impl RangeLimitedRpc {
    /// Starts the proxy on a free loopback port, in front of `upstream_http_url`.
    pub async fn start(upstream_http_url: &str, max_range: u64) -> Result<Self, ProxyError> {
        Self::start_with_error(upstream_http_url, max_range, RangeError::default()).await
    }

    /// Like [`RangeLimitedRpc::start`], answering refusals with `error`.
    pub async fn start_with_error(
        upstream_http_url: &str,
        max_range: u64,
        error: RangeError,
    ) -> Result<Self, ProxyError> {
        Self::start_with_shutdown(
            upstream_http_url,
            max_range,
            error,
            CancellationToken::new(),
        )
        .await
    }

    /// Like [`RangeLimitedRpc::start_with_error`], also stopping when `shutdown` is cancelled.
    /// Stopping the proxy does not cancel `shutdown`.
    pub async fn start_with_shutdown(
        upstream_http_url: &str,
        max_range: u64,
        error: RangeError,
        shutdown: CancellationToken,
    ) -> Result<Self, ProxyError> {
        let upstream = JsonRpcClient::new(upstream_http_url)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let state = Arc::new(RangeState {
            upstream,
            max_range,
            error,
            stats: RangeStats::default(),
            hidden_topic: Mutex::new(None),
        });
        let cancel = shutdown.child_token();
        let task = tokio::spawn(serve_range_limited(listener, state.clone(), cancel.clone()));
        Ok(Self {
            addr,
            state,
            cancel,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured limit (blocks per `eth_getLogs`, inclusive range).
    pub fn max_range(&self) -> u64 {
        self.state.max_range
    }

    /// HTTP requests received (a batch counts once).
    pub fn http_requests(&self) -> u64 {
        self.state.stats.http_requests.load(Ordering::Relaxed)
    }

    /// Answers the next `n` HTTP requests with 429 Too Many Requests, as a hosted provider does
    /// when a client goes over its rate.
    pub fn rate_limit_next(&self, n: u64) {
        self.state.stats.rate_limit_next.store(n, Ordering::Relaxed);
    }

    /// From now on leaves out of single `eth_getLogs` answers every log whose first topic is
    /// `topic0` (0x-hex), as a lying provider would to hide an event.
    pub fn hide_logs(&self, topic0: &str) {
        *lock(&self.state.hidden_topic) = Some(topic0.to_ascii_lowercase());
    }

    /// HTTP requests answered 429.
    pub fn rate_limited(&self) -> u64 {
        self.state.stats.rate_limited.load(Ordering::Relaxed)
    }

    /// JSON-RPC calls forwarded upstream (each batch item counts).
    pub fn calls_forwarded(&self) -> u64 {
        self.state.stats.calls_forwarded.load(Ordering::Relaxed)
    }

    /// `eth_getLogs` calls refused for their range.
    pub fn get_logs_refused(&self) -> u64 {
        self.state.stats.get_logs_refused.load(Ordering::Relaxed)
    }

    /// `eth_getLogs` calls forwarded (within the limit, or by block hash).
    pub fn get_logs_served(&self) -> u64 {
        self.state.stats.get_logs_served.load(Ordering::Relaxed)
    }

    /// The resolved `(from, to)` ranges of forwarded `eth_getLogs` calls, in arrival order
    /// (calls by block hash are not listed).
    pub fn served_ranges(&self) -> Vec<(u64, u64)> {
        lock(&self.state.stats.served_ranges).clone()
    }

    /// The resolved `(from, to)` ranges of refused `eth_getLogs` calls, in arrival order.
    pub fn refused_ranges(&self) -> Vec<(u64, u64)> {
        lock(&self.state.stats.refused_ranges).clone()
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RangeLimitedRpc {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve_range_limited(
    listener: TcpListener,
    state: Arc<RangeState>,
    cancel: CancellationToken,
) {
    // Dropping the set on exit aborts the connection tasks.
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "range-limited RPC proxy: accept failed");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle_rpc(state.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle_rpc(
    state: Arc<RangeState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    let limited = state
        .stats
        .rate_limit_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if limited {
        state.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Ok(plain(
            StatusCode::TOO_MANY_REQUESTS,
            "429 Too Many Requests: over the rate limit",
        ));
    }
    if request.method() != Method::POST {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "JSON-RPC expects POST",
        ));
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {e}"),
            ));
        }
    };
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => handle_batch(&state, items).await,
        Ok(single) => handle_single(&state, single, body).await,
        // Not JSON: let the upstream produce its own parse error.
        Err(_) => forward_raw(&state, body, 1).await,
    };
    Ok(answer.unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &format!("upstream failed: {e}"))))
}

async fn handle_single(
    state: &RangeState,
    call: Value,
    raw: Bytes,
) -> Result<Response<Full<Bytes>>, RpcError> {
    if let Some(refusal) = check_call(state, &call).await? {
        return Ok(json_response(StatusCode::OK, &refusal));
    }
    let hidden = lock(&state.hidden_topic).clone();
    if let Some(topic) = hidden
        && call.get("method").and_then(Value::as_str) == Some("eth_getLogs")
    {
        state.stats.calls_forwarded.fetch_add(1, Ordering::Relaxed);
        let logs = state
            .upstream
            .call("eth_getLogs", call["params"].clone())
            .await?;
        let kept: Vec<Value> = logs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|log| log["topics"][0].as_str() != Some(topic.as_str()))
            .cloned()
            .collect();
        let answer = json!({"jsonrpc": "2.0", "id": call["id"].clone(), "result": kept});
        return Ok(json_response(StatusCode::OK, &answer));
    }
    forward_raw(state, raw, 1).await
}

async fn handle_batch(
    state: &RangeState,
    items: Vec<Value>,
) -> Result<Response<Full<Bytes>>, RpcError> {
    let mut answers: Vec<Option<Value>> = Vec::with_capacity(items.len());
    let mut forwarded = Vec::new();
    for item in &items {
        let refusal = check_call(state, item).await?;
        if refusal.is_none() {
            forwarded.push(item.clone());
        }
        answers.push(refusal);
    }
    if !forwarded.is_empty() {
        let count = forwarded.len() as u64;
        state
            .stats
            .calls_forwarded
            .fetch_add(count, Ordering::Relaxed);
        let upstream = state
            .upstream
            .post_json(&Value::Array(forwarded), "batch")
            .await?;
        let mut responses = match upstream {
            Value::Array(responses) => responses,
            other => vec![other],
        };
        for (item, answer) in items.iter().zip(answers.iter_mut()) {
            if answer.is_some() {
                continue;
            }
            let id = item.get("id");
            if let Some(pos) = responses.iter().position(|r| r.get("id") == id) {
                *answer = Some(responses.swap_remove(pos));
            }
        }
    }
    let merged: Vec<Value> = answers.into_iter().flatten().collect();
    Ok(json_response(StatusCode::OK, &Value::Array(merged)))
}

/// Returns the error response if `call` is an `eth_getLogs` over too wide a range.
async fn check_call(state: &RangeState, call: &Value) -> Result<Option<Value>, RpcError> {
    if call.get("method").and_then(Value::as_str) != Some("eth_getLogs") {
        return Ok(None);
    }
    let filter = call.get("params").and_then(|p| p.get(0));
    if filter
        .and_then(|f| f.get("blockHash"))
        .is_some_and(|h| !h.is_null())
    {
        state.stats.get_logs_served.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    let from = resolve_block(state, filter.and_then(|f| f.get("fromBlock"))).await?;
    let to = resolve_block(state, filter.and_then(|f| f.get("toBlock"))).await?;
    let (Some(from), Some(to)) = (from, to) else {
        // Malformed block numbers: the upstream answers with its own error.
        return Ok(None);
    };
    let span = to.saturating_sub(from).saturating_add(1);
    if to >= from && span > state.max_range {
        state.stats.get_logs_refused.fetch_add(1, Ordering::Relaxed);
        lock(&state.stats.refused_ranges).push((from, to));
        let message = state
            .error
            .message
            .replace("{max}", &state.max_range.to_string());
        return Ok(Some(json!({
            "jsonrpc": "2.0",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "error": {"code": state.error.code, "message": message},
        })));
    }
    state.stats.get_logs_served.fetch_add(1, Ordering::Relaxed);
    lock(&state.stats.served_ranges).push((from, to));
    Ok(None)
}

/// A block parameter as a number; tags other than "earliest" mean the upstream's head.
async fn resolve_block(state: &RangeState, block: Option<&Value>) -> Result<Option<u64>, RpcError> {
    match block {
        None | Some(Value::Null) => latest(state).await.map(Some),
        Some(Value::String(tag)) if !tag.starts_with("0x") => match tag.as_str() {
            "earliest" => Ok(Some(0)),
            "latest" | "pending" | "safe" | "finalized" => latest(state).await.map(Some),
            _ => Ok(None),
        },
        Some(value) => Ok(parse_quantity(value)),
    }
}

async fn latest(state: &RangeState) -> Result<u64, RpcError> {
    let head = state.upstream.call("eth_blockNumber", json!([])).await?;
    parse_quantity(&head).ok_or_else(|| RpcError::InvalidResponse {
        url: state.upstream.url().to_owned(),
        reason: format!("eth_blockNumber returned {head}"),
    })
}

async fn forward_raw(
    state: &RangeState,
    body: Bytes,
    calls: u64,
) -> Result<Response<Full<Bytes>>, RpcError> {
    state
        .stats
        .calls_forwarded
        .fetch_add(calls, Ordering::Relaxed);
    let (status, bytes) = state.upstream.post_bytes(body, "forwarded").await?;
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

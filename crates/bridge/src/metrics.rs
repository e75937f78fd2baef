//! Prometheus metrics of the bridge, served as text on `/metrics`.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Counters and gauges the bridge updates as it works.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Registry events applied.
    pub events_processed: AtomicU64,
    /// Notes published (and acknowledged by the broker).
    pub notes_published: AtomicU64,
    /// Chain head seen last.
    pub chain_head: AtomicU64,
    /// Last block mirrored.
    pub mirrored_block: AtomicU64,
    /// RPC reconnections.
    pub rpc_reconnects: AtomicU64,
    /// Broker reconnections.
    pub broker_reconnects: AtomicU64,
    /// Reorgs followed.
    pub reorgs: AtomicU64,
    /// Log ranges the RPC refused.
    pub range_refusals: AtomicU64,
    /// Notes built with chain data left out (a refused topic filter, an unreadable key).
    pub chain_data_refused: AtomicU64,
    /// Broker connections after which the bridge compared the broker's notes with its own.
    pub broker_syncs: AtomicU64,
    /// Notes the broker lacked (or held wrong) at those comparisons, and were published again.
    pub notes_restored: AtomicU64,
    /// Ranges that fewer RPC endpoints than the quorum agreed on.
    pub rpc_disagreements: AtomicU64,
}

impl Metrics {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let lag = get(&self.chain_head).saturating_sub(get(&self.mirrored_block));
        let rows: [(&str, &str, &str, u64); 13] = [
            (
                "anchormq_bridge_events_processed_total",
                "counter",
                "Registry events applied.",
                get(&self.events_processed),
            ),
            (
                "anchormq_bridge_notes_published_total",
                "counter",
                "Key notes published and acknowledged by the broker.",
                get(&self.notes_published),
            ),
            (
                "anchormq_bridge_chain_head",
                "gauge",
                "Latest chain head seen.",
                get(&self.chain_head),
            ),
            (
                "anchormq_bridge_mirrored_block",
                "gauge",
                "Last block whose events are mirrored.",
                get(&self.mirrored_block),
            ),
            (
                "anchormq_bridge_block_lag",
                "gauge",
                "Blocks between the chain head and the last mirrored block.",
                lag,
            ),
            (
                "anchormq_bridge_rpc_reconnects_total",
                "counter",
                "Reconnections to the RPC.",
                get(&self.rpc_reconnects),
            ),
            (
                "anchormq_bridge_broker_reconnects_total",
                "counter",
                "Reconnections to the MQTT broker.",
                get(&self.broker_reconnects),
            ),
            (
                "anchormq_bridge_reorgs_total",
                "counter",
                "Chain reorganisations followed.",
                get(&self.reorgs),
            ),
            (
                "anchormq_bridge_range_refusals_total",
                "counter",
                "eth_getLogs ranges the RPC refused.",
                get(&self.range_refusals),
            ),
            (
                "anchormq_bridge_chain_data_refused_total",
                "counter",
                "Notes built with chain data left out (invalid topic filter: group mirrored as claiming no topic; unreadable key: no note). The log names the group or node.",
                get(&self.chain_data_refused),
            ),
            (
                "anchormq_bridge_broker_syncs_total",
                "counter",
                "Broker connections after which the broker's notes were compared with the bridge's.",
                get(&self.broker_syncs),
            ),
            (
                "anchormq_bridge_notes_restored_total",
                "counter",
                "Notes the broker lacked at those comparisons, published again.",
                get(&self.notes_restored),
            ),
            (
                "anchormq_bridge_rpc_disagreements_total",
                "counter",
                "Reads that fewer RPC endpoints than the quorum agreed on (asked again).",
                get(&self.rpc_disagreements),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(target: "anchormq::bridge", %error, "metrics accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = if request.uri().path() == "/metrics" {
        (StatusCode::OK, metrics.render())
    } else {
        (
            StatusCode::NOT_FOUND,
            "not found: try /metrics\n".to_owned(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

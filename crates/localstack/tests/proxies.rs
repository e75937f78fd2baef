//! Fault injection: TCP connection cuts and a range-limited JSON-RPC endpoint, against real
//! servers.

use std::time::Duration;

use anchormq_localstack::{
    Anvil, AnvilRpc, EmbeddedBroker, JsonRpcClient, RangeLimitedRpc, RpcError, TcpCutProxy,
    await_condition,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// A TCP echo server on a loopback port, serving until the test ends.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    addr
}

async fn echo_once(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.expect("write");
    let mut buffer = vec![0u8; message.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buffer))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(buffer, message);
}

#[tokio::test]
async fn cut_all_closes_open_connections_and_later_ones_work() {
    let proxy = TcpCutProxy::start(echo_server().await)
        .await
        .expect("proxy");
    let mut first = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut second = TcpStream::connect(proxy.addr()).await.expect("connect");
    echo_once(&mut first, b"ping").await;
    echo_once(&mut second, b"pong").await;
    assert_eq!(proxy.active(), 2);

    assert_eq!(proxy.cut_all(), 2);
    for stream in [&mut first, &mut second] {
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .expect("EOF in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "client still connected: {read:?}"
        );
    }
    await_condition(
        "proxy to count the cuts",
        WAIT,
        Duration::from_millis(5),
        || async { proxy.cut() == 2 && proxy.active() == 0 },
    )
    .await
    .expect("cuts counted");

    let mut third = TcpStream::connect(proxy.addr())
        .await
        .expect("connect after cut");
    echo_once(&mut third, b"again").await;
    assert_eq!(proxy.accepted(), 3);
}

#[tokio::test]
async fn paused_proxy_refuses_connections_until_resumed() {
    let proxy = TcpCutProxy::start(echo_server().await)
        .await
        .expect("proxy");
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    // Accepted by the proxy before the pause (pausing resets connections not yet accepted).
    echo_once(&mut open, b"before").await;
    proxy.pause().await;
    assert!(proxy.is_paused());
    let refused = TcpStream::connect(proxy.addr()).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    echo_once(&mut open, b"still up").await;

    proxy.resume().await.expect("resume on the same port");
    let mut fresh = TcpStream::connect(proxy.addr())
        .await
        .expect("connect after resume");
    echo_once(&mut fresh, b"back").await;
}

#[tokio::test]
async fn mqtt_client_through_the_proxy_sees_the_cut() {
    let broker = EmbeddedBroker::start().await.expect("embedded broker");
    let proxy = TcpCutProxy::start(broker.addr()).await.expect("proxy");
    let options = MqttOptions::new("through-proxy", "127.0.0.1", proxy.port());
    let (_client, mut events) = AsyncClient::new(options, 8);
    loop {
        let event = tokio::time::timeout(WAIT, events.poll())
            .await
            .expect("connack in time");
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = event {
            break;
        }
    }
    proxy.cut_all();
    let after_cut = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = events.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("client notices the cut");
    assert!(!after_cut.to_string().is_empty());
}

#[tokio::test]
async fn shutdown_closes_connections() {
    let proxy = TcpCutProxy::start(echo_server().await)
        .await
        .expect("proxy");
    let addr = proxy.addr();
    let mut open = TcpStream::connect(addr).await.expect("connect");
    echo_once(&mut open, b"x").await;
    proxy.shutdown().await;
    let mut buffer = [0u8; 1];
    let read = tokio::time::timeout(WAIT, open.read(&mut buffer))
        .await
        .expect("EOF in time");
    assert!(matches!(read, Ok(0) | Err(_)));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn range_limited_rpc_refuses_wide_get_logs_and_serves_narrow_ones() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let upstream = anvil.rpc().expect("client");
    upstream
        .call("anvil_mine", json!(["0x96"]))
        .await
        .expect("mine 150 blocks");
    let proxy = RangeLimitedRpc::start(&anvil.http_url(), 100)
        .await
        .expect("proxy");
    let rpc = JsonRpcClient::new(&proxy.url()).expect("client");

    let wide = rpc
        .call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest"}]),
        )
        .await
        .expect_err("151 blocks is over the limit");
    match wide {
        RpcError::Rpc { code, message, .. } => {
            assert_eq!(code, -32005);
            assert_eq!(message, "query exceeds max block range 100");
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
    let narrow = rpc
        .call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x63"}]),
        )
        .await
        .expect("100 blocks is allowed");
    assert!(narrow.is_array());
    // No range given means latest..latest.
    rpc.call("eth_getLogs", json!([{}]))
        .await
        .expect("one block");
    // Other methods pass through.
    assert_eq!(
        rpc.call("eth_blockNumber", json!([])).await.expect("head"),
        json!("0x96")
    );

    assert_eq!(proxy.get_logs_refused(), 1);
    assert_eq!(proxy.refused_ranges(), vec![(0, 150)]);
    assert_eq!(proxy.served_ranges(), vec![(0, 99), (150, 150)]);
}

#[tokio::test]
async fn range_limited_rpc_splits_batches() {
    let anvil = Anvil::spawn().await.expect("anvil");
    anvil
        .rpc()
        .expect("client")
        .call("anvil_mine", json!(["0x20"]))
        .await
        .expect("mine");
    let proxy = RangeLimitedRpc::start(&anvil.http_url(), 10)
        .await
        .expect("proxy");
    let rpc = JsonRpcClient::new(&proxy.url()).expect("client");
    let batch = json!([
        {"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs", "params": [{"fromBlock": "0x1", "toBlock": "0x20"}]},
        {"jsonrpc": "2.0", "id": 8, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 9, "method": "eth_getLogs", "params": [{"fromBlock": "0x11", "toBlock": "0x1a"}]},
    ]);
    let answer = rpc.post_json(&batch, "batch").await.expect("batch answer");
    let items = answer.as_array().expect("array");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["id"], 7);
    assert_eq!(items[0]["error"]["code"], -32005);
    assert_eq!(items[1]["id"], 8);
    assert_eq!(items[1]["result"], "0x20");
    assert_eq!(items[2]["id"], 9);
    assert!(items[2]["result"].is_array(), "{}", items[2]);
    assert_eq!(proxy.get_logs_refused(), 1);
    assert_eq!(proxy.get_logs_served(), 1);
    assert_eq!(proxy.calls_forwarded(), 2);
    assert_eq!(proxy.http_requests(), 1);
}

#[tokio::test]
async fn cancelling_the_callers_token_stops_both_proxies() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tcp = TcpCutProxy::start_with_shutdown(echo_server().await, shutdown.clone())
        .await
        .expect("tcp proxy");
    let rpc = RangeLimitedRpc::start_with_shutdown(
        &anvil.http_url(),
        5,
        anchormq_localstack::RangeError {
            code: -32602,
            message: "block range too large (max {max})".into(),
        },
        shutdown.clone(),
    )
    .await
    .expect("rpc proxy");
    let client = JsonRpcClient::new(&rpc.url()).expect("client");
    let err = client
        .call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x9"}]),
        )
        .await
        .expect_err("10 blocks over a limit of 5");
    assert!(
        matches!(&err, RpcError::Rpc { code: -32602, message, .. } if message == "block range too large (max 5)"),
        "{err:?}"
    );

    shutdown.cancel();
    let (tcp_addr, rpc_addr) = (tcp.addr(), rpc.addr());
    await_condition(
        "both listeners closed",
        WAIT,
        Duration::from_millis(5),
        || async {
            TcpStream::connect(tcp_addr).await.is_err()
                && TcpStream::connect(rpc_addr).await.is_err()
        },
    )
    .await
    .expect("listeners closed after cancel");
}

#[tokio::test]
async fn dropping_a_proxy_leaves_the_callers_token_alone() {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let proxy = TcpCutProxy::start_with_shutdown(echo_server().await, shutdown.clone())
        .await
        .expect("proxy");
    drop(proxy);
    assert!(!shutdown.is_cancelled());
}

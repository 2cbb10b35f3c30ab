//! A cache's metrics in Prometheus's text format, served on `/metrics`.
//!
//! Run with `cargo run --example prometheus`, then, while it runs (20 s by
//! default; `-- --seconds N` to change), try the `curl` line it prints.
//!
//! metrics-exporter-prometheus renders the text; a service mounts that on
//! its own router (with axum: `get(move || async move { handle.render() })`).
//! Here a few lines of tokio stand in for the router, so the example pulls
//! in no HTTP stack. The exporter's own `with_http_listener` (its
//! `http-listener` feature) does the same without a router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_cache::Cache;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args().skip_while(|a| a != "--seconds").nth(1).map_or(Ok(20), |s| s.parse())?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, handle.clone()));

    let users: Cache<u64, Arc<String>> =
        Cache::builder().name("users").max_size(500).default_ttl(Duration::from_secs(5)).build();
    let _reporter = async_cache::metrics::register(&users);
    println!("serving metrics for {seconds} s; try:\n\n    curl -s http://{address}/metrics | grep '^cache_'\n");

    // A small load: 8 clients over 1,000 ids, 1 ms "database" loads.
    let started = Instant::now();
    let clients: Vec<_> = (0..8u64)
        .map(|client| {
            let users = users.clone();
            tokio::spawn(async move {
                let mut state = client + 1;
                while started.elapsed() < Duration::from_secs(seconds) {
                    // xorshift: cheap, good enough for a demo load
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = state % 1_000;
                    let id = i * i / 1_000; // skewed toward small ids
                    users
                        .get_or_load(id, || async move {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            Arc::new(format!("user {id}"))
                        })
                        .await;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await?;
    }

    // What a scrape sees now: a real HTTP request to the endpoint.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    println!("a scrape of http://{address}/metrics, the cache's lines:");
    for line in response.lines().filter(|l| l.starts_with("cache_") && !l.contains("quantile")) {
        println!("    {line}");
    }
    Ok(())
}

/// Answers `GET /metrics` with the rendered text, anything else with 404.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            // The request line is all we look at; 8 KiB bounds what we read.
            let mut request = vec![0; 8 * 1024];
            let Ok(n) = stream.read(&mut request).await else { return };
            let wanted = request[..n].starts_with(b"GET /metrics ");
            let (status, body) = if wanted { ("200 OK", handle.render()) } else { ("404 Not Found", String::new()) };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

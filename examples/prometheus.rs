//! A cache's metrics served to Prometheus by metrics-exporter-prometheus.
//!
//! Run with `cargo run --example prometheus --features metrics`, then, while
//! it runs (20 s by default; `-- --seconds N` to change), try the `curl`
//! line it prints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_cache::Cache;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args().skip_while(|a| a != "--seconds").nth(1).map_or(Ok(20), |s| s.parse())?;
    // Port 0 would be best, but the exporter does not report the port it
    // bound; pick a free one first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    PrometheusBuilder::new().with_http_listener(address).install()?;

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

    // What a scrape sees now.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    println!("a scrape of http://{address}/metrics, the cache's lines:");
    for line in response.lines().filter(|l| l.starts_with("cache_") && !l.contains("quantile")) {
        println!("    {line}");
    }
    Ok(())
}

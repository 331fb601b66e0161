//! Prometheus `/metrics`, scraped with a plain HTTP GET.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The whole `/metrics` response (status line and headers included).
pub async fn scrape(port: u16) -> String {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .expect("read /metrics");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the sample whose name and labels start with `prefix` (e.g.
/// `shardbouncer_pool_transactions_total{database="app"`; labels render in the
/// order the code gives them).
pub fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

//! Shared test helpers: a server on free ports and a connected client.

#![allow(dead_code)]

use std::path::Path;

use tokio_postgres::{Client, NoTls};
use weir::{Config, Server};

/// Starts a server on free ports with its data in `data_dir`.
pub async fn start(data_dir: &Path) -> Server {
    start_with(data_dir, Config::default()).await
}

/// Starts a server on free ports with its data in `data_dir`, otherwise as `config`.
pub async fn start_with(data_dir: &Path, config: Config) -> Server {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        pg_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    Server::start(config).await.expect("server starts")
}

/// A client connected to `server`.
pub async fn connect(server: &Server) -> Client {
    let addr = server.pg_addr();
    let (client, conn) = tokio_postgres::connect(
        &format!("host={} port={} user=weir", addr.ip(), addr.port()),
        NoTls,
    )
    .await
    .expect("connects");
    tokio::spawn(conn);
    client
}

/// Rows of a simple query as text, NULL as "NULL".
pub async fn text_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for m in client.simple_query(sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            );
        }
    }
    out
}

/// The named columns of a simple query's rows, as text (NULL as "NULL").
pub async fn named_rows(client: &Client, sql: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for m in client.simple_query(sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push(
                columns
                    .iter()
                    .map(|c| r.get(*c).unwrap_or("NULL").to_string())
                    .collect(),
            );
        }
    }
    out
}

/// GET a path from the server's HTTP endpoint; returns (status line, body).
pub async fn http_get(server: &Server, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// A value from the /metrics text: `name` is the metric with its labels.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

//! Runs every `sql/**/*.slt` file through sqllogictest against a Weir server
//! started in-process on free ports, one fresh server (and data directory) per file.
//! Errors read as `<SQLSTATE>: <message>`, so a file can expect a code:
//! `statement error 42P01`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use weir::{Config, Server};

#[derive(Debug)]
struct PgError(String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgError(format!("{}: {}", db.code().code(), db.message())),
            None => PgError(e.to_string()),
        }
    }
}

struct Client {
    client: tokio_postgres::Client,
}

#[async_trait]
impl sqllogictest::AsyncDB for Client {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.len()),
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "weir"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            slt_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "slt") {
            out.push(p);
        }
    }
}

async fn run_file(path: &Path) -> Result<(), String> {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: data.path().join("weir-data"),
        pg_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        // Not the machine's cores: EXPLAIN and SHOW print it.
        parallelism: 2,
        ..Config::default()
    };
    let server = Server::start(config).await.map_err(|e| e.to_string())?;
    let addr = server.pg_addr();
    let mut runner = sqllogictest::Runner::new(move || async move {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host={} port={} user=weir dbname=weir",
                addr.ip(),
                addr.port()
            ),
            NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok::<_, PgError>(Client { client })
    });
    runner.with_column_validator(|_, _| true);
    let result = runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(true).to_string());
    server.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files = Vec::new();
    slt_files(&root, &mut files);
    let filter = std::env::var("SLT").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for f in &files {
        if filter
            .as_ref()
            .is_some_and(|pat| !f.to_string_lossy().contains(pat.as_str()))
        {
            continue;
        }
        ran += 1;
        match run_file(f).await {
            Ok(()) => println!("ok   {}", f.display()),
            Err(e) => {
                println!("FAIL {}\n{e}", f.display());
                failures.push(f.display().to_string());
            }
        }
    }
    assert!(ran > 0, "no .slt files found under {}", root.display());
    assert!(failures.is_empty(), "failed: {failures:?}");
}

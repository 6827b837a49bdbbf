//! The HTTP endpoint: `GET /health` and `GET /metrics` (Prometheus text
//! format), on a minimal HTTP/1.1 server written directly on tokio.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::session::Database;

/// Longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestLine<'a> {
    pub method: &'a str,
    /// The path without its query string.
    pub path: &'a str,
}

/// Why a request could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not a request line at all (400).
    Malformed,
    /// An HTTP version other than 1.x (505).
    Version,
}

/// Parses the first line of a request head, `METHOD SP target SP HTTP/1.x`.
pub(crate) fn parse_request_line(head: &str) -> Result<RequestLine<'_>, ParseError> {
    let line = head.split("\r\n").next().unwrap_or_default();
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::Malformed);
    }
    // origin-form, or absolute-form (`http://host:port/path`)
    let path = if target.starts_with('/') {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err(ParseError::Malformed);
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match version.strip_prefix("HTTP/") {
        Some("1.0" | "1.1") => Ok(RequestLine { method, path }),
        Some(v) if v.starts_with(|c: char| c.is_ascii_digit()) => Err(ParseError::Version),
        _ => Err(ParseError::Malformed),
    }
}

/// A response to send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `HEAD` requests get the headers only.
    pub head_only: bool,
}

impl HttpResponse {
    fn text(status: u16, body: impl Into<String>) -> Self {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    /// The response bytes, closing the connection afterwards.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Routes a parsed request; `metrics` renders the metrics text when asked.
pub(crate) fn route(request: &RequestLine<'_>, metrics: impl FnOnce() -> String) -> HttpResponse {
    let head_only = request.method == "HEAD";
    let mut response = match request.path {
        "/health" | "/metrics" if !matches!(request.method, "GET" | "HEAD") => {
            HttpResponse::text(405, "method not allowed\n")
        }
        "/health" => HttpResponse::text(200, "ok"),
        "/metrics" => HttpResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: metrics(),
            head_only: false,
        },
        _ => HttpResponse::text(404, "not found\n"),
    };
    response.head_only = head_only;
    response
}

/// Serves one HTTP connection: one request, one response, then close.
pub(crate) async fn serve_connection(mut stream: TcpStream, db: Arc<Database>) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => HttpResponse::text(408, "request timeout\n"),
        Ok(Err(_)) => return,
        Ok(Ok(None)) => HttpResponse::text(431, "request head too large\n"),
        Ok(Ok(Some(head))) => match parse_request_line(&head) {
            Ok(request) => route(&request, || {
                std::panic::catch_unwind(AssertUnwindSafe(|| db.metrics_text())).unwrap_or_else(
                    |_| {
                        tracing::error!("rendering metrics panicked");
                        String::new()
                    },
                )
            }),
            Err(ParseError::Version) => HttpResponse::text(505, "HTTP/1.x only\n"),
            Err(ParseError::Malformed) => HttpResponse::text(400, "bad request\n"),
        },
    };
    if let Err(e) = stream.write_all(&response.to_bytes()).await {
        tracing::debug!(error = %e, "writing HTTP response failed");
        return;
    }
    let _ = stream.shutdown().await;
}

/// Reads up to the blank line ending the request head. `Ok(None)`: too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // closed early: answer whatever arrived (a bare request line)
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the request head ends (before `\r\n\r\n` or a bare `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: &'static str, path: &'static str) -> Result<RequestLine<'static>, ParseError> {
        Ok(RequestLine { method, path })
    }

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            parse_request_line("GET /health HTTP/1.1\r\nHost: x\r\n"),
            ok("GET", "/health")
        );
        assert_eq!(
            parse_request_line("GET /metrics HTTP/1.0"),
            ok("GET", "/metrics")
        );
        assert_eq!(
            parse_request_line("HEAD /health?x=1 HTTP/1.1"),
            ok("HEAD", "/health")
        );
        assert_eq!(
            parse_request_line("GET /metrics#frag HTTP/1.1\n"),
            ok("GET", "/metrics")
        );
        assert_eq!(
            parse_request_line("GET http://127.0.0.1:5580/metrics HTTP/1.1"),
            ok("GET", "/metrics")
        );
        assert_eq!(
            parse_request_line("GET http://host HTTP/1.1"),
            ok("GET", "/")
        );
        assert_eq!(
            parse_request_line("POST /health HTTP/1.1"),
            ok("POST", "/health")
        );
    }

    #[test]
    fn rejects_malformed_request_lines() {
        for bad in [
            "",
            "\r\n",
            "GET",
            "GET /health",
            "GET /health HTTP/1.1 extra",
            "GET  /health HTTP/1.1",
            "get /health HTTP/1.1",
            "GET health HTTP/1.1",
            "GET /health FTP/1.1",
            "\u{0}\u{1}\u{2}",
            "SSLRequest garbage",
        ] {
            assert_eq!(
                parse_request_line(bad),
                Err(ParseError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_request_line("GET /health HTTP/2.0"),
            Err(ParseError::Version)
        );
        assert_eq!(
            parse_request_line("GET /health HTTP/0.9"),
            Err(ParseError::Version)
        );
    }

    #[test]
    fn routes() {
        let get = |path| RequestLine {
            method: "GET",
            path,
        };
        let r = route(&get("/health"), || unreachable!());
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));

        let r = route(&get("/metrics"), || "weir_up 1\n".to_owned());
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/plain; version=0.0.4");
        assert_eq!(r.body, "weir_up 1\n");

        assert_eq!(route(&get("/"), String::new).status, 404);
        assert_eq!(route(&get("/healthz"), String::new).status, 404);
        let post = RequestLine {
            method: "POST",
            path: "/metrics",
        };
        assert_eq!(route(&post, || unreachable!()).status, 405);

        let head = RequestLine {
            method: "HEAD",
            path: "/health",
        };
        let bytes = String::from_utf8(route(&head, String::new).to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(bytes.contains("Content-Length: 2\r\n"));
        assert!(bytes.ends_with("\r\n\r\n"));
    }

    #[test]
    fn serialises_responses() {
        let r = route(
            &RequestLine {
                method: "GET",
                path: "/health",
            },
            String::new,
        );
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nok"
        );
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(23));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}

//! The admin API seen from the command line: `weir status`, `weir reload` and
//! `weir cache purge` send one request to a running weir's admin listener and
//! turn its answer into something a person (or, with `--json`, a script)
//! reads.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Longest the command waits for weir's answer (a reload reads files and may
/// look names up).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where a running weir's admin API is, and the token its `POST` endpoints
/// may need.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    pub address: SocketAddr,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the admin API at {0} did not answer within {TIMEOUT:?}")]
    Timeout(SocketAddr),
    #[error("the admin API at {address} broke off: {source}")]
    Http {
        address: SocketAddr,
        source: hyper::Error,
    },
}

/// One answer of the admin API.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl AdminTarget {
    /// Sends `method path` with `body` (JSON when given) and reads the answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, ClientError> {
        let address = self.address;
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(address))?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, ClientError> {
        let address = self.address;
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect { address, source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Http { address, source })?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, address.to_string());
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .expect("a request of valid parts");
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| ClientError::Http { address, source })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http { address, source })?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// `/status` as a table: each upstream, then a line per backend.
pub fn status_table(status: &Value) -> String {
    let mut out = String::new();
    if status["draining"].as_bool() == Some(true) {
        out.push_str("DRAINING: weir is shutting down\n\n");
    }
    for listener in status["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "listener {}  {}",
            text(&listener["name"]),
            listener["address"]
                .as_str()
                .unwrap_or_else(|| text(&listener["listen"])),
        );
    }
    for route in status["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "route {}  host {}  path {}  -> {}",
            text(&route["name"]),
            route["host"].as_str().unwrap_or("*"),
            route["path_prefix"].as_str().unwrap_or("/"),
            text(&route["upstream"]),
        );
    }
    for upstream in status["upstreams"].as_array().into_iter().flatten() {
        let backends = upstream["backends"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let _ = writeln!(
            out,
            "\nupstream {} ({}): {} of {} usable",
            text(&upstream["name"]),
            text(&upstream["strategy"]),
            upstream["usable_backends"].as_u64().unwrap_or(0),
            backends.len()
        );
        let rows: Vec<[String; 5]> = backends
            .iter()
            .map(|backend| {
                let state = match (backend["healthy"].as_bool(), backend["ejected"].as_bool()) {
                    (_, Some(true)) => "ejected",
                    (Some(false), _) => "unhealthy",
                    _ => "healthy",
                };
                let address = match backend["name"].as_str() {
                    Some(name) => format!("{} ({name})", text(&backend["address"])),
                    None => text(&backend["address"]).to_owned(),
                };
                [
                    address,
                    state.to_owned(),
                    backend["active_requests"].to_string(),
                    backend["weight"].to_string(),
                    format!("{:.1}", backend["effective_weight"].as_f64().unwrap_or(0.0)),
                ]
            })
            .collect();
        let header = ["BACKEND", "STATE", "IN FLIGHT", "WEIGHT", "EFFECTIVE"];
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|row| row[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let mut line = String::from("  ");
            for (cell, width) in cells.iter().zip(&widths) {
                let _ = write!(line, "{cell:<width$}  ");
            }
            line.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(&header));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            out.push_str(&line(&cells));
        }
    }
    out
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_each_backend_with_its_state() {
        let status = json!({
            "draining": false,
            "listeners": [{"name": "public", "listen": "0.0.0.0:8080", "address": "0.0.0.0:8080"}],
            "routes": [{"name": "route-0", "host": null, "path_prefix": null, "upstream": "app"}],
            "upstreams": [{
                "name": "app", "strategy": "round_robin", "usable_backends": 1,
                "backends": [
                    {"address": "10.0.0.1:80", "name": null, "weight": 1, "effective_weight": 1.0,
                     "healthy": true, "ejected": false, "active_requests": 3},
                    {"address": "10.0.0.2:80", "name": "app.internal", "weight": 2, "effective_weight": 2.0,
                     "healthy": false, "ejected": false, "active_requests": 0}
                ]
            }]
        });
        let table = status_table(&status);
        assert!(table.contains("listener public  0.0.0.0:8080"), "{table}");
        assert!(
            table.contains("route route-0  host *  path /  -> app"),
            "{table}"
        );
        assert!(
            table.contains("upstream app (round_robin): 1 of 2 usable"),
            "{table}"
        );
        let rows: Vec<&str> = table.lines().filter(|l| l.contains("10.0.0.")).collect();
        assert!(
            rows[0].contains("healthy") && rows[0].contains(" 3 "),
            "{table}"
        );
        assert!(
            rows[1].contains("10.0.0.2:80 (app.internal)") && rows[1].contains("unhealthy"),
            "{table}"
        );
    }
}

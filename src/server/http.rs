//! `--metrics-port`: a small blocking HTTP server for Prometheus and load
//! balancers, on a port of its own (not the protocol's).
//!
//! ```text
//! GET /metrics   200, the Prometheus text format (crate::metrics)
//! GET /healthz   200 "leader of term 3" while the node serves;
//!                503 with the reason while it stops or is found unhealthy
//! anything else  404 (a method other than GET: 405)
//! ```
//!
//! One thread, `metrics-http`, answers one request at a time with
//! `tiny_http`: a scrape every few seconds needs no more, and a slow
//! scraper delays only the next scrape, never a client of the store. The
//! answer is built from the same status report `kv_client status` shows.

use std::net::SocketAddr;
use std::sync::Arc;

use tiny_http::{Header, Method, Response, Server};

use crate::error::{Error, Result};
use crate::metrics;
use crate::server::connection::status;
use crate::server::Node;

/// Bind `address` and answer HTTP requests on a thread of their own.
/// Returns the bound address (port 0 picks one).
pub fn spawn(address: &str, node: Arc<Node>) -> Result<SocketAddr> {
    let server = Server::http(address).map_err(|e| {
        Error::io(format!("binding the metrics port {address}"), std::io::Error::other(e))
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Unexpected("the metrics server is not on an IP address".into()))?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = answer(request.method(), request.url(), &node);
                if let Err(e) = request.respond(response) {
                    log::debug!("[metrics] answering a request: {e}");
                }
            }
        })
        .map_err(|e| Error::io("spawning the metrics thread", e))?;
    Ok(bound)
}

/// The response to `method url`.
fn answer(method: &Method, url: &str, node: &Node) -> Response<std::io::Cursor<Vec<u8>>> {
    let path = url.split('?').next().unwrap_or("");
    if *method != Method::Get {
        return text(405, "only GET is served here\n".into());
    }
    match path {
        "/metrics" => {
            let report = status(node);
            match metrics::global().render(&report) {
                Ok(body) => with_type(Response::from_string(body), &metrics::content_type()),
                Err(e) => text(500, format!("{e}\n")),
            }
        }
        "/healthz" => {
            let report = status(node);
            let role = if report.role == "leader" {
                format!("leader of term {}", report.term)
            } else {
                match &report.leader {
                    Some(l) => format!("follower of {} in term {}", l.address, report.term),
                    None => format!("follower in term {}, no leader known", report.term),
                }
            };
            if node.shutdown.is_requested() {
                text(503, format!("stopping ({role})\n"))
            } else if let Some(why) = &report.unhealthy {
                text(503, format!("unhealthy ({role}): {why}\n"))
            } else {
                text(200, format!("{role}\n"))
            }
        }
        _ => text(404, "not found: GET /metrics or /healthz\n".into()),
    }
}

fn text(code: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    with_type(Response::from_string(body), "text/plain; charset=utf-8").with_status_code(code)
}

fn with_type(
    response: Response<std::io::Cursor<Vec<u8>>>,
    content_type: &str,
) -> Response<std::io::Cursor<Vec<u8>>> {
    match Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

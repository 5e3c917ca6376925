//! The `services/proxy` subresource: requests to
//! `/api/v1/namespaces/{ns}/services/{[scheme:]name[:port]}/proxy/{path}` are forwarded to an
//! endpoint of the Service, as the API server does it.
//!
//! The endpoint comes from the core/v1 Endpoints object of the Service's name (there is no
//! endpoints controller: tests write it, pointing at a server on 127.0.0.1, which a selector-less
//! Service on a real cluster also needs). Bodies are streamed both ways, never buffered.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri, Version};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::store::Store;

/// A request path under a Service's proxy subresource.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyPath {
    pub namespace: String,
    /// The path segment naming the Service, decoded: `name`, `name:port` or `scheme:name:port`.
    pub service: String,
    /// What follows `/proxy`, `/` when nothing does.
    pub rest: String,
}

/// Splits `/api/v1/namespaces/{ns}/services/{svc}/proxy[/{rest}]`; `None` for any other path.
/// The rest keeps its slashes as sent (a trailing one matters to the upstream's routes).
pub fn parse_path(path: &str) -> Option<ProxyPath> {
    let after_ns = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, after) = after_ns.split_once('/')?;
    let after = after.strip_prefix("services/")?;
    let (service, after) = after.split_once('/')?;
    let rest = after.strip_prefix("proxy")?;
    if !(rest.is_empty() || rest.starts_with('/')) || namespace.is_empty() || service.is_empty() {
        return None;
    }
    let rest = if rest.is_empty() { "/".to_string() } else { rest.to_string() };
    Some(ProxyPath { namespace: percent_decode(namespace), service: percent_decode(service), rest })
}

/// Decodes `%XX` escapes (clients may send `name%3Aport`); anything malformed is kept as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// `name`, `name:port` or `scheme:name:port`, as the API server splits a proxied Service's id.
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceId {
    pub scheme: String,
    pub name: String,
    pub port: Option<String>,
}

pub fn split_service_id(id: &str) -> ApiResult<ServiceId> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => ("", "", ""),
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return Err(ApiError::BadRequest(format!(
            "invalid service request {id:?}: expected <name>, <name>:<port> or http:<name>:<port>"
        )));
    }
    if scheme == "https" {
        return Err(ApiError::BadRequest(format!(
            "kube-sim proxies plain HTTP only: ask for {name:?} or \"http:{name}:{port}\" instead of {id:?}"
        )));
    }
    let port = Some(port.to_string()).filter(|p| !p.is_empty());
    Ok(ServiceId { scheme: scheme.to_string(), name: name.to_string(), port })
}

fn unavailable(msg: String) -> ApiError {
    ApiError::ServiceUnavailable(msg)
}

/// The name of the Service port asked for: by name or number, else the Service's only port.
/// (Endpoints ports carry the Service port's name, which is how the two are matched.)
fn service_port_name(svc: &Value, name: &str, port: Option<&str>) -> ApiResult<String> {
    let ports = svc["spec"]["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    let port_name = |p: &Value| p["name"].as_str().unwrap_or_default().to_string();
    match port {
        None => Ok(match ports {
            [only] => port_name(only),
            _ => String::new(),
        }),
        Some(p) => match p.parse::<i64>() {
            Ok(num) => ports
                .iter()
                .find(|sp| sp["port"].as_i64() == Some(num))
                .map(port_name)
                .ok_or_else(|| unavailable(format!("no service port {num} found for service \"{name}\""))),
            Err(_) => ports
                .iter()
                .find(|sp| sp["name"].as_str() == Some(p))
                .map(port_name)
                .ok_or_else(|| unavailable(format!("no service port \"{p}\" found for service \"{name}\""))),
        },
    }
}

/// The first ready address of the first Endpoints subset that serves the port, with that port:
/// the endpoint port of the same name, or a subset's only port when the name does not tell.
fn pick_endpoint(endpoints: &Value, name: &str, port_name: &str, service_ports: usize) -> ApiResult<SocketAddr> {
    let none = || unavailable(format!("no endpoints available for service \"{name}\""));
    let subsets = endpoints["subsets"].as_array().map(Vec::as_slice).unwrap_or_default();
    for subset in subsets {
        let ports = subset["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
        let port = ports.iter().find(|p| p["name"].as_str().unwrap_or_default() == port_name).or(match ports {
            [only] if service_ports <= 1 || only["name"].as_str().unwrap_or_default().is_empty() => Some(only),
            _ => None,
        });
        let Some(port) = port.and_then(|p| p["port"].as_u64()).and_then(|p| u16::try_from(p).ok()) else { continue };
        let Some(ip) = subset["addresses"].as_array().and_then(|a| a.first()).and_then(|a| a["ip"].as_str()) else {
            continue;
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| unavailable(format!("endpoints of service \"{name}\" have an invalid address {ip:?}: expected an IP")))?;
        return Ok(SocketAddr::new(ip, port));
    }
    Err(none())
}

/// Where a request for the Service id in the namespace goes: 404 without the Service, 503
/// without a ready endpoint for its port.
pub fn resolve(store: &Store, namespace: &str, id: &ServiceId) -> ApiResult<SocketAddr> {
    let services = store.resolve("", "v1", "services").ok_or_else(|| ApiError::NotFound("services are not served".into()))?;
    let svc = store.get(&services, namespace, &id.name)?;
    let port_name = service_port_name(&svc, &id.name, id.port.as_deref())?;
    let endpoints_type = store.resolve("", "v1", "endpoints").ok_or_else(|| ApiError::NotFound("endpoints are not served".into()))?;
    let endpoints = store
        .get(&endpoints_type, namespace, &id.name)
        .map_err(|_| unavailable(format!("no endpoints available for service \"{}\"", id.name)))?;
    let service_ports = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
    pick_endpoint(&endpoints, &id.name, &port_name, service_ports)
}

/// Headers that describe one connection, not the message: never forwarded by a proxy.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    for h in named {
        headers.remove(h);
    }
}

/// The request's headers as the upstream gets them: no credentials meant for the API server,
/// no hop-by-hop headers, and the endpoint as `Host`.
fn upstream_headers(mut headers: HeaderMap, upstream: SocketAddr) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    if let Ok(host) = HeaderValue::from_str(&upstream.to_string()) {
        headers.insert(header::HOST, host);
    }
    headers
}

fn cannot_reach(upstream: SocketAddr, e: impl std::fmt::Display) -> ApiError {
    unavailable(format!("error trying to reach service: dial tcp {upstream}: {e}"))
}

/// Sends the request to the endpoint over a fresh HTTP/1.1 connection and returns its response,
/// both bodies streamed.
pub async fn forward(req: Request, upstream: SocketAddr, rest: &str) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let uri: Uri = path_and_query.parse().map_err(|e| ApiError::BadRequest(format!("invalid proxy path {path_and_query:?}: {e}")))?;
    let stream = tokio::net::TcpStream::connect(upstream).await.map_err(|e| cannot_reach(upstream, e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| cannot_reach(upstream, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%upstream, "proxied connection ended: {e}");
        }
    });
    let mut out = Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = upstream_headers(parts.headers, upstream);
    let resp = sender.send_request(out).await.map_err(|e| cannot_reach(upstream, e))?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxy_paths_split_into_namespace_service_and_rest() {
        let p = parse_path("/api/v1/namespaces/ns/services/svc:http/proxy/a/b/").unwrap();
        assert_eq!(p, ProxyPath { namespace: "ns".into(), service: "svc:http".into(), rest: "/a/b/".into() });
        assert_eq!(parse_path("/api/v1/namespaces/ns/services/svc/proxy").unwrap().rest, "/");
        assert_eq!(parse_path("/api/v1/namespaces/ns/services/http%3Asvc%3A80/proxy/x").unwrap().service, "http:svc:80");
        assert_eq!(parse_path("/api/v1/namespaces/ns/services/svc/status"), None);
        assert_eq!(parse_path("/api/v1/namespaces/ns/services/svc/proxyx"), None);
        assert_eq!(parse_path("/api/v1/namespaces/ns/pods/p/proxy"), None);
    }

    #[test]
    fn service_ids_take_a_port_and_the_http_scheme() {
        let id = split_service_id("svc").unwrap();
        assert_eq!((id.name.as_str(), id.port), ("svc", None));
        let id = split_service_id("svc:8080").unwrap();
        assert_eq!(id.port.as_deref(), Some("8080"));
        let id = split_service_id("http:svc:web").unwrap();
        assert_eq!((id.scheme.as_str(), id.name.as_str(), id.port.as_deref()), ("http", "svc", Some("web")));
        assert!(split_service_id("ftp:svc:21").is_err());
        assert!(split_service_id("https:svc:443").is_err());
        assert!(split_service_id(":80").is_err());
    }

    #[test]
    fn endpoints_are_chosen_by_port_name_and_readiness() {
        let svc = json!({"spec": {"ports": [{"name": "web", "port": 80}, {"name": "metrics", "port": 9090}]}});
        assert_eq!(service_port_name(&svc, "s", Some("80")).unwrap(), "web");
        assert_eq!(service_port_name(&svc, "s", Some("metrics")).unwrap(), "metrics");
        assert!(matches!(service_port_name(&svc, "s", Some("81")), Err(ApiError::ServiceUnavailable(_))));
        let eps = json!({"subsets": [
            {"notReadyAddresses": [{"ip": "127.0.0.9"}], "ports": [{"name": "web", "port": 1}]},
            {"addresses": [{"ip": "127.0.0.1"}, {"ip": "127.0.0.2"}], "ports": [{"name": "web", "port": 8080}, {"name": "metrics", "port": 9100}]},
        ]});
        assert_eq!(pick_endpoint(&eps, "s", "metrics", 2).unwrap(), "127.0.0.1:9100".parse().unwrap());
        assert_eq!(pick_endpoint(&eps, "s", "web", 2).unwrap(), "127.0.0.1:8080".parse().unwrap());
        let err = pick_endpoint(&json!({}), "s", "web", 2).unwrap_err();
        assert_eq!(err.to_string(), r#"no endpoints available for service "s""#);
        let unnamed = json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 7000}]}]});
        assert_eq!(pick_endpoint(&unnamed, "s", "web", 1).unwrap(), "127.0.0.1:7000".parse().unwrap());
    }
}

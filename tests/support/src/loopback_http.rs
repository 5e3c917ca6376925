//! Just enough HTTP/1.1 to probe and provision a local test server: one request per connection
//! (`Connection: close`), response read to EOF. Keeps the fixture free of an HTTP client stack.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub body: String,
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("malformed HTTP response from {addr}: {text:.200}"))?;
    let Some((_, body)) = text.split_once("\r\n\r\n") else {
        bail!("HTTP response from {addr} has no body separator");
    };
    // Chunked responses only come from endpoints this fixture does not call; the XML
    // values it extracts survive chunk framing anyway.
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// The text between `<tag>` and `</tag>`, for pulling single values out of small XML replies.
pub fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_xml_values() {
        let xml = "<A><AccessKeyId>AKIA1</AccessKeyId><SecretAccessKey>s/+1</SecretAccessKey></A>";
        assert_eq!(xml_value(xml, "AccessKeyId"), Some("AKIA1"));
        assert_eq!(xml_value(xml, "SecretAccessKey"), Some("s/+1"));
        assert_eq!(xml_value(xml, "Missing"), None);
    }

    #[test]
    fn form_encodes_reserved_characters() {
        assert_eq!(
            form_encode("{\"a\": \"*\"}"),
            "%7B%22a%22%3A%20%22%2A%22%7D"
        );
        assert_eq!(form_encode("plain-1.2_~"), "plain-1.2_~");
    }
}

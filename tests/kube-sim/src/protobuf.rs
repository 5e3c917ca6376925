//! Just enough of Kubernetes' protobuf encoding to accept the bodies `kubectl create <kind>`
//! sends for the kinds people create that way (namespace, configmap, secret, serviceaccount).
//! Everything else kubectl sends is JSON.

use base64::Engine;
use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Field::Bytes(b)
            }
            1 => {
                self.pos += 8;
                Field::Varint(0)
            }
            5 => {
                self.pos += 4;
                Field::Varint(0)
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((num, field)))
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 string".to_string())
}

/// A `map<string, string|bytes>` entry; bytes values are base64-encoded as in JSON.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) if bytes_value => v = json!(base64::engine::general_purpose::STANDARD.encode(x)),
            (2, Field::Bytes(x)) => v = json!(string(x)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Field::Bytes(x)) => drop(meta.insert("name".into(), json!(string(x)?))),
            (2, Field::Bytes(x)) => drop(meta.insert("generateName".into(), json!(string(x)?))),
            (3, Field::Bytes(x)) => drop(meta.insert("namespace".into(), json!(string(x)?))),
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v);
            }
            (14, Field::Bytes(x)) => finalizers.push(json!(string(x)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

/// Decodes a protobuf-encoded object of a supported kind into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let body = body.strip_prefix(MAGIC).ok_or("not a Kubernetes protobuf body")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut r = Reader::new(body);
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next()? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind.clone()));
    let (mut data, mut binary) = (Map::new(), Map::new());
    let mut r = Reader::new(raw);
    while let Some((num, f)) = r.next()? {
        match (kind.as_str(), num, f) {
            (_, 1, Field::Bytes(x)) => drop(obj.insert("metadata".into(), object_meta(x)?)),
            ("Namespace" | "ServiceAccount", _, _) => {}
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                data.insert(k, v);
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true)?;
                binary.insert(k, v);
            }
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true)?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(x)) => drop(obj.insert("type".into(), json!(string(x)?))),
            ("ConfigMap" | "Secret", 4 | 5, Field::Varint(v)) if (kind == "ConfigMap") == (num == 4) => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            ("ConfigMap" | "Secret", _, _) => {}
            (other, _, _) => {
                return Err(format!(
                    "kube-sim decodes protobuf bodies only for Namespace, ConfigMap, Secret and ServiceAccount, not {other}; \
                     use `kubectl apply -f` (JSON) for this kind"
                ))
            }
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [field(1, b"settings"), field(11, &[field(1, b"app"), field(2, b"web")].concat())].concat();
        let raw = [field(1, &meta), field(2, &[field(1, b"color"), field(2, b"blue")].concat())].concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["metadata"]["name"], "settings");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["data"]["color"], "blue");
    }

    #[test]
    fn names_unsupported_kinds() {
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let raw = field(2, b"x");
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert!(decode(&body).unwrap_err().contains("Deployment"));
    }
}

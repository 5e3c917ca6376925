//! Label selectors on the command line, in `kubectl`'s syntax:
//! `app=nginx,tier!=cache,env in (prod,staging),release notin (canary),backup,!skip`.
//! `k=v` goes to `matchLabels`, everything else to `matchExpressions`.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector};

const EXAMPLE: &str = "write e.g. app=nginx,tier in (web,db),!canary";

/// Parses one selector. The error names the offending term and shows the syntax.
pub fn parse(text: &str) -> Result<LabelSelector, String> {
    let terms = split_terms(text).map_err(|e| format!("selector {text:?}: {e}; {EXAMPLE}"))?;
    if terms.is_empty() {
        return Err(format!("selector {text:?} is empty; {EXAMPLE}"));
    }
    let expressions = terms
        .iter()
        .map(|term| expression(term).map_err(|e| format!("selector {text:?}: {term:?}: {e}; {EXAMPLE}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(expressions.into_iter().collect::<Selector>().into())
}

/// Parses Velero's `--or-selector`: selectors separated by ` or `.
pub fn parse_or(text: &str) -> Result<Vec<LabelSelector>, String> {
    text.split(" or ").map(|part| parse(part.trim())).collect()
}

/// A selector as `kubectl` prints one (`app=nginx,tier in (db,web)`), `<none>` when empty.
pub fn format(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else { return "<none>".to_string() };
    match Selector::try_from(selector.clone()) {
        Ok(s) if s.selects_all() => "<none>".to_string(),
        Ok(s) => s.to_string(),
        Err(e) => format!("<invalid: {}>", e.0),
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<String>, &'static str> {
    let (mut terms, mut current, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses");
        }
        current.push(c);
    }
    if depth != 0 {
        return Err("unbalanced parentheses");
    }
    terms.push(current);
    let terms: Vec<String> = terms.into_iter().map(|t| t.trim().to_string()).collect();
    if terms.len() > 1 && terms.iter().any(String::is_empty) {
        return Err("empty term between commas");
    }
    Ok(terms.into_iter().filter(|t| !t.is_empty()).collect())
}

fn expression(term: &str) -> Result<Expression, String> {
    if let Some(open) = term.find('(') {
        let values = term[open + 1..].strip_suffix(')').ok_or("text after the closing parenthesis")?;
        let head = term[..open].trim_end();
        let (key, op) = head.rsplit_once(char::is_whitespace).ok_or("expected `KEY in (...)` or `KEY notin (...)`")?;
        let values: BTreeSet<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            return Err("empty value in the list".into());
        }
        values.iter().try_for_each(|v| check_value(v))?;
        let key = checked_key(key.trim())?;
        return match op {
            "in" => Ok(Expression::In(key, values)),
            "notin" => Ok(Expression::NotIn(key, values)),
            other => Err(format!("unknown operator {other:?} (use in or notin)")),
        };
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Expression::NotEqual(checked_key(key.trim())?, checked_value(value.trim())?));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Expression::Equal(checked_key(key.trim())?, checked_value(value.trim())?));
    }
    match term.strip_prefix('!') {
        Some(key) => Ok(Expression::DoesNotExist(checked_key(key.trim())?)),
        None => Ok(Expression::Exists(checked_key(term)?)),
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63 characters.
fn checked_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let bad = |why: &str| Err(format!("label key {key:?} {why}"));
    if let Some(prefix) = prefix {
        let dns = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
        if prefix.is_empty() || prefix.len() > 253 || !prefix.bytes().all(dns) {
            return bad("has an invalid prefix (a DNS subdomain such as example.com)");
        }
    }
    if name.is_empty() {
        return bad("has an empty name");
    }
    if !is_label_token(name) {
        return bad("must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit");
    }
    Ok(key.to_string())
}

fn checked_value(value: &str) -> Result<String, String> {
    check_value(value).map(|()| value.to_string())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_token(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    s.len() <= 63
        && b.iter().all(inner)
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> serde_json::Value {
        serde_json::to_value(parse(text).unwrap()).unwrap()
    }

    #[test]
    fn equality_goes_to_match_labels() {
        assert_eq!(parsed("app=nginx"), json!({"matchLabels": {"app": "nginx"}}));
        assert_eq!(
            parsed(" app == nginx , stowage.io/tier=web"),
            json!({"matchLabels": {"app": "nginx", "stowage.io/tier": "web"}})
        );
    }

    #[test]
    fn set_and_existence_go_to_match_expressions() {
        assert_eq!(
            parsed("app=nginx,env in (prod, staging),tier notin (cache),backup,!skip,track!=canary"),
            json!({
                "matchLabels": {"app": "nginx"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                    {"key": "tier", "operator": "NotIn", "values": ["cache"]},
                    {"key": "backup", "operator": "Exists"},
                    {"key": "skip", "operator": "DoesNotExist"},
                    {"key": "track", "operator": "NotIn", "values": ["canary"]},
                ]
            })
        );
    }

    #[test]
    fn bad_selectors_name_the_term() {
        for (text, needle) in [
            ("app in (a,b", "unbalanced"),
            ("app in ()", "empty value"),
            ("app within (a)", "unknown operator"),
            ("app=ngi nx", "label value"),
            ("-app=x", "label key"),
            ("Example.com/app=x", "prefix"),
            ("a=b,,c=d", "empty term"),
            ("", "empty"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("write e.g."), "{err}");
        }
        assert!(parse(&format!("app={}", "x".repeat(64))).is_err());
    }

    #[test]
    fn or_selectors_split_on_or() {
        let selectors = parse_or("app=nginx or tier in (db,web)").unwrap();
        assert_eq!(selectors.len(), 2);
        assert_eq!(format(Some(&selectors[1])), "tier in (db,web)");
        assert!(parse_or("app=nginx or ").is_err());
    }

    #[test]
    fn formats_like_kubectl() {
        assert_eq!(format(None), "<none>");
        assert_eq!(format(Some(&LabelSelector::default())), "<none>");
        assert_eq!(format(Some(&parse("b=2,a=1,!x").unwrap())), "a=1,b=2,!x");
    }
}

//! `--backup-location-config key=value,key=value`: the storage location's provider settings.

use std::collections::BTreeMap;

use stowage_api::location::Provider;

use super::InstallError;

/// Keys the S3 store understands; others are passed through with a warning (likely typos).
const AWS_KEYS: &[&str] = &[
    "region",
    "s3Url",
    "publicUrl",
    "s3ForcePathStyle",
    "insecureSkipTLSVerify",
    "profile",
    "serverSideEncryption",
    "kmsKeyId",
    "checksumAlgorithm",
    "signatureVersion",
    "tagging",
];
const BOOL_KEYS: &[&str] = &["s3ForcePathStyle", "insecureSkipTLSVerify"];
const URL_KEYS: &[&str] = &["s3Url", "publicUrl"];

/// Parses the flag's occurrences (each a comma-separated list) into a map. Returns the map and
/// warnings about keys the provider does not know.
pub fn parse(
    occurrences: &[String],
    provider: Option<Provider>,
) -> Result<(BTreeMap<String, String>, Vec<String>), InstallError> {
    let mut config = BTreeMap::new();
    for pair in occurrences.iter().flat_map(|o| o.split(',')) {
        let malformed = || InstallError::MalformedConfigPair { pair: pair.to_string() };
        let (key, value) = pair.split_once('=').ok_or_else(malformed)?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(malformed());
        }
        let value = unquote(value.trim());
        if config.insert(key.to_string(), value.to_string()).is_some() {
            return Err(InstallError::DuplicateConfigKey { key: key.to_string() });
        }
    }
    let mut warnings = Vec::new();
    for (key, value) in &config {
        if BOOL_KEYS.contains(&key.as_str()) && value != "true" && value != "false" {
            return Err(InstallError::ConfigNotBool { key: key.clone(), value: value.clone() });
        }
        if URL_KEYS.contains(&key.as_str()) && !(value.starts_with("http://") || value.starts_with("https://")) {
            return Err(InstallError::ConfigNotUrl { key: key.clone(), value: value.clone() });
        }
        let known = match provider {
            Some(Provider::Aws) => AWS_KEYS.contains(&key.as_str()),
            Some(Provider::Filesystem) => false,
            None => true,
        };
        if !known {
            let hint = match provider {
                Some(Provider::Aws) => format!("known keys: {}", AWS_KEYS.join(", ")),
                _ => "the filesystem provider takes no settings".to_string(),
            };
            warnings.push(format!("--backup-location-config: unknown key {key:?} is passed through ({hint})"));
        }
    }
    Ok((config, warnings))
}

/// `s3ForcePathStyle="true"` reaches us with the quotes when the shell did not remove them.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(s: &str) -> Result<BTreeMap<String, String>, InstallError> {
        parse(&[s.to_string()], Some(Provider::Aws)).map(|(c, _)| c)
    }

    #[test]
    fn parses_the_minio_example() {
        let config = parse_one("region=minio,s3ForcePathStyle=\"true\",s3Url=http://minio.velero.svc:9000").unwrap();
        assert_eq!(config["region"], "minio");
        assert_eq!(config["s3ForcePathStyle"], "true");
        assert_eq!(config["s3Url"], "http://minio.velero.svc:9000");
    }

    #[test]
    fn repeated_flags_merge() {
        let (config, _) = parse(&["region=a".into(), "profile=p".into()], Some(Provider::Aws)).unwrap();
        assert_eq!(config.len(), 2);
    }

    #[test]
    fn malformed_pairs_are_named() {
        for (input, pair) in
            [("region=minio,s3ForcePathStyle", "s3ForcePathStyle"), ("region=a,,b=c", ""), ("=x", "=x")]
        {
            match parse_one(input) {
                Err(InstallError::MalformedConfigPair { pair: p }) => assert_eq!(p, pair, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
        let err = parse_one("region=a,s3ForcePathStyle").unwrap_err().to_string();
        assert!(err.contains("\"s3ForcePathStyle\"") && err.contains("KEY=VALUE"), "{err}");
        assert!(matches!(parse_one("region=a,region=b"), Err(InstallError::DuplicateConfigKey { .. })));
        assert!(matches!(parse_one("s3ForcePathStyle=yes"), Err(InstallError::ConfigNotBool { .. })));
        assert!(matches!(parse_one("s3Url=minio:9000"), Err(InstallError::ConfigNotUrl { .. })));
    }

    #[test]
    fn unknown_keys_warn() {
        let (config, warnings) = parse(&["s3url=http://x".into()], Some(Provider::Aws)).unwrap();
        assert_eq!(config["s3url"], "http://x");
        assert!(warnings[0].contains("\"s3url\""), "{warnings:?}");
        assert!(parse(&[], Some(Provider::Aws)).unwrap().0.is_empty());
    }
}

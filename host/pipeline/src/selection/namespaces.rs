//! Namespace filters: globs (`prod-*`), an empty include list meaning every namespace.

use globset::{Glob, GlobMatcher};

use super::{Exclusion, SelectionError};

#[derive(Clone, Debug)]
pub struct NamespaceFilter {
    /// `None`: every namespace.
    included: Option<Vec<GlobMatcher>>,
    excluded: Vec<GlobMatcher>,
}

const INCLUDED: &str = "includedNamespaces";
const EXCLUDED: &str = "excludedNamespaces";

impl NamespaceFilter {
    pub fn resolve(included: &[String], excluded: &[String]) -> Result<NamespaceFilter, SelectionError> {
        if included.len() > 1 && included.iter().any(|n| n == "*") {
            return Err(SelectionError::StarWithOthers { field: INCLUDED });
        }
        if excluded.iter().any(|n| n == "*") {
            return Err(SelectionError::ExcludesEverything { field: EXCLUDED });
        }
        let included_globs = compile(INCLUDED, included)?;
        let excluded_globs = compile(EXCLUDED, excluded)?;
        check_overlap(included, &excluded_globs)?;
        let everything = included.is_empty() || included == ["*"];
        Ok(NamespaceFilter { included: (!everything).then_some(included_globs), excluded: excluded_globs })
    }

    /// Whether every namespace is selected: Velero's test for a cluster-wide backup.
    pub(crate) fn includes_everything(&self) -> bool {
        self.included.is_none() && self.excluded.is_empty()
    }

    pub fn check(&self, namespace: &str) -> Result<(), Exclusion> {
        let matches = |globs: &[GlobMatcher]| globs.iter().any(|g| g.is_match(namespace));
        if matches(&self.excluded) {
            return Err(Exclusion::NamespaceExcluded { namespace: namespace.to_string() });
        }
        match &self.included {
            Some(globs) if !matches(globs) => Err(Exclusion::NamespaceNotIncluded { namespace: namespace.to_string() }),
            _ => Ok(()),
        }
    }
}

/// A namespace named outright in the include list but matched by an exclusion can never be
/// selected: the request contradicts itself. (`prod-*` minus `prod-test` is fine.)
fn check_overlap(included: &[String], excluded: &[GlobMatcher]) -> Result<(), SelectionError> {
    for name in included.iter().filter(|n| !is_glob(n)) {
        if let Some(glob) = excluded.iter().find(|g| g.is_match(name)) {
            return Err(SelectionError::NamespaceIncludedAndExcluded {
                namespace: name.clone(),
                exclusion: glob.glob().glob().to_string(),
            });
        }
    }
    Ok(())
}

fn is_glob(entry: &str) -> bool {
    entry.contains(['*', '?', '[', '{'])
}

fn compile(field: &'static str, entries: &[String]) -> Result<Vec<GlobMatcher>, SelectionError> {
    entries.iter().map(|entry| compile_one(field, entry)).collect()
}

fn compile_one(field: &'static str, entry: &str) -> Result<GlobMatcher, SelectionError> {
    let invalid = |reason: String| SelectionError::InvalidNamespace { field, entry: entry.to_string(), reason };
    if entry.is_empty() {
        return Err(invalid("an entry is empty".into()));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-*?[]{},!".contains(c);
    if let Some(c) = entry.chars().find(|c| !allowed(*c)) {
        return Err(invalid(format!(
            "{c:?} cannot appear in a namespace name; namespaces are lowercase letters, digits and '-', with globs such as prod-*"
        )));
    }
    Glob::new(entry).map(|g| g.compile_matcher()).map_err(|e| invalid(e.kind().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(included: &[&str], excluded: &[&str]) -> Result<NamespaceFilter, SelectionError> {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        NamespaceFilter::resolve(&v(included), &v(excluded))
    }

    #[test]
    fn globs_include_and_exclude() {
        let f = filter(&["prod-*", "shop"], &["prod-test"]).unwrap();
        assert!(f.check("prod-eu").is_ok());
        assert!(f.check("shop").is_ok());
        assert_eq!(f.check("prod-test"), Err(Exclusion::NamespaceExcluded { namespace: "prod-test".into() }));
        assert_eq!(f.check("dev"), Err(Exclusion::NamespaceNotIncluded { namespace: "dev".into() }));
        assert!(!f.includes_everything());
    }

    #[test]
    fn empty_or_star_include_means_everything() {
        assert!(filter(&[], &[]).unwrap().includes_everything());
        assert!(filter(&["*"], &[]).unwrap().includes_everything());
        let minus_one = filter(&[], &["kube-system"]).unwrap();
        assert!(!minus_one.includes_everything(), "an exclusion makes it not cluster-wide, as in Velero");
        assert!(minus_one.check("default").is_ok());
    }

    #[test]
    fn contradictions_are_rejected_with_the_names() {
        let err = filter(&["shop"], &["sh*"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace \"shop\" is both included and excluded (by \"sh*\"); remove it from one of the lists"
        );
        assert!(matches!(filter(&["*", "a"], &[]), Err(SelectionError::StarWithOthers { .. })));
        assert!(matches!(filter(&[], &["*"]), Err(SelectionError::ExcludesEverything { .. })));
        let err = filter(&["Shop"], &[]).unwrap_err().to_string();
        assert!(err.contains("\"Shop\"") && err.contains("'S'"), "{err}");
        assert!(filter(&["prod-["], &[]).is_err());
    }
}

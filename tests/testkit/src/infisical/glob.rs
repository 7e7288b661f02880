//! The server's pattern matching: `value == pattern || picomatch.isMatch(value, pattern)`,
//! imitated with globset (`*` stays inside one `/` segment, `**` crosses, `{a,b}` braces).

/// True if `value` equals `pattern` or matches it as a picomatch-style glob.
pub(crate) fn matches(pattern: &str, value: &str) -> bool {
    if pattern == value {
        return true;
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .is_ok_and(|glob| glob.compile_matcher().is_match(value))
}

/// Splits a policy list the way the server stores it (`"a, b"`), tolerating `"a,b"`.
pub(crate) fn split_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_star_stays_in_one_segment_and_double_star_crosses() {
        let id = "spiffe://example.org/ns/prod/sa/web";
        assert!(!matches("spiffe://example.org/ns/prod/*", id));
        assert!(matches("spiffe://example.org/ns/prod/**", id));
        assert!(matches("spiffe://example.org/ns/prod/sa/*", id));
        assert!(matches("spiffe://example.org/ns/{dev,prod}/sa/web", id));
        assert!(matches(id, id));
        assert!(!matches("spiffe://example.org/ns/dev/**", id));
    }

    #[test]
    fn an_invalid_glob_only_matches_itself() {
        assert!(matches("a{b", "a{b"));
        assert!(!matches("a{b", "ab"));
    }

    #[test]
    fn lists_split_on_commas_with_or_without_spaces() {
        assert_eq!(split_list("a, b,c"), vec!["a", "b", "c"]);
        assert!(split_list("").is_empty());
    }
}

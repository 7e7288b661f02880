//! The no-secret audit of what the launcher printed: no secret value, no
//! JWT-SVID, no access token, nothing shaped like a JWT, no piece of a
//! credential.

use svid_exec_testkit::stack::DEMO_SECRETS;

/// Asserts that `text` carries none of the stack's demo values nor any of
/// `values` (whole, when over 3 bytes, and any line of 8 bytes or more, so a
/// log that splits lines cannot leak one either), and no JWT: the JWT-SVID
/// and the stand-in's access tokens are JWTs, whose first part is a JSON
/// header (`eyJ` in base64url).
#[track_caller]
pub fn assert_no_secret(text: &str, values: &[&str]) {
    let demo = DEMO_SECRETS.iter().map(|(_, value)| *value);
    for value in demo.chain(values.iter().copied()) {
        let whole = Some(value).filter(|v| v.len() > 3);
        for needle in whole
            .into_iter()
            .chain(value.lines().filter(|l| l.len() >= 8))
        {
            assert!(
                !text.contains(needle),
                "a secret value ({} bytes starting {:?}) is in:\n{text}",
                needle.len(),
                needle.chars().take(6).collect::<String>()
            );
        }
    }
    if let Some(jwt) = find_jwt_like(text) {
        panic!("a JWT-like string {jwt:.12}… is in:\n{text}");
    }
    assert!(!text.contains("eyJ"), "a JWT or token is in:\n{text}");
}

/// Something shaped like a JWT: `eyJ…` and three base64url parts.
pub fn find_jwt_like(text: &str) -> Option<&str> {
    let is_b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut rest = text;
    while let Some(start) = rest.find("eyJ") {
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| !(is_b64url(c) || c == '.'))
            .unwrap_or(candidate.len());
        let token = &candidate[..end];
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() >= 3 && parts.iter().take(3).all(|p| !p.is_empty()) {
            return Some(token);
        }
        rest = &candidate[3..];
    }
    None
}

/// Asserts that no run of 12 characters of `credential` (a JWT, an access
/// token) is in `text`: a server message quoting a piece of it must have
/// been redacted, however it was cut.
#[track_caller]
pub fn assert_no_fragment(text: &str, credential: &str) {
    assert!(credential.len() > 40, "the credential is a real one");
    for window in credential.as_bytes().windows(12) {
        let window = std::str::from_utf8(window).expect("ASCII credential");
        assert!(
            !text.contains(window),
            "a piece of a credential ({window}) was printed:\n{text}"
        );
    }
}

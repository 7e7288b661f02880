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
}

/// The first thing shaped like a JWT in `text` (the JWT-SVID, an access
/// token, or a part of one): `eyJ` (base64url of `{"`) starting a run of
/// base64url and dots that has either a first part long enough for a JOSE
/// header (12 characters or more) followed by a `.`, or three non-empty
/// parts. A bare `eyJ` is not enough: the stand-in's random request ids
/// contain it now and then (`req-sGpeyJVzaILtKs`), which the load test's
/// thousands of 429 messages hit.
pub fn find_jwt_like(text: &str) -> Option<&str> {
    let is_b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").find_map(|(start, _)| {
        let candidate = &text[start..];
        let end = candidate
            .find(|c: char| !(is_b64url(c) || c == '.'))
            .unwrap_or(candidate.len());
        let token = &candidate[..end];
        let parts: Vec<&str> = token.split('.').collect();
        let dotted_header = parts.len() >= 2 && parts[0].len() >= 12;
        let three_parts = parts.len() >= 3 && parts.iter().take(3).all(|p| !p.is_empty());
        (dotted_header || three_parts).then_some(token)
    })
}

#[test]
fn a_jwt_is_found_in_text_and_a_request_id_is_not() {
    let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    assert_eq!(find_jwt_like(&format!("token {jwt} leaked")), Some(jwt));
    assert_eq!(find_jwt_like(jwt), Some(jwt));
    // a header and its dot, the rest cut off; a short three-part token
    assert!(find_jwt_like("cut: eyJhbGciOiJFUzI1NiJ9.").is_some());
    assert!(find_jwt_like("eyJh.eyJz.c2ln").is_some());
    let refused = "HTTP 429 RateLimitExceeded (reqId req-sGpeyJVzaILtKs); retrying";
    assert_eq!(find_jwt_like(refused), None);
    assert_no_secret(refused, &[]);
    assert_eq!(find_jwt_like("eyJ."), None);
    assert_eq!(find_jwt_like("eyJ alone, and a.b.c"), None);
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

//! One unary call of the SPIFFE Workload API (`FetchJWTSVID`), made directly
//! over HTTP/2 on the agent's socket: connect, one request, one answer, close.
//!
//! Why not the `spiffe` crate's client: it builds a reconnecting, buffered
//! tonic channel (a worker task, tower layers, a spawned connection task) for
//! one request, which cost a launch more than the call itself (BENCHMARKS.md),
//! and it hands back the parsed token without the answer's own `spiffe_id`,
//! which the caller needs to refuse an answer that contradicts itself. The
//! messages are the spec's (`workload.proto`, spiffe.md §2.2); the status
//! codes and their handling are gRPC's.

use std::fmt;
use std::io;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use spiffe::transport::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::{Zeroize, Zeroizing};

/// The method path of `FetchJWTSVID` (the proto has no package).
pub(super) const FETCH_JWT_SVID: &str = "/SpiffeWorkloadAPI/FetchJWTSVID";

/// The largest answer accepted: gRPC's customary default message limit.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// `JWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct JwtSvidRequest {
    /// The audiences to mint the JWT-SVID for; required.
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// The SPIFFE ID wanted, or empty for every identity of the workload.
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct JwtSvidResponse {
    /// One per identity; never empty in a successful answer.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvidEntry>,
}

/// `JWTSVID`: never `Debug`-formatted with its token, zeroized when dropped.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub(super) struct JwtSvidEntry {
    /// The SPIFFE ID the agent says this token is for.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token (compact JWS).
    #[prost(string, tag = "2")]
    pub svid: String,
    /// The registration entry's optional hint.
    #[prost(string, tag = "3")]
    pub hint: String,
}

impl fmt::Debug for JwtSvidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvidEntry")
            .field("spiffe_id", &self.spiffe_id)
            .field("svid", &"[redacted]")
            .field("hint", &self.hint)
            .finish()
    }
}

impl Drop for JwtSvidEntry {
    fn drop(&mut self) {
        self.svid.zeroize();
    }
}

/// A gRPC status code (the numbers are gRPC's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Code(pub i32);

impl Code {
    pub(super) const UNKNOWN: Self = Self(2);
    pub(super) const INVALID_ARGUMENT: Self = Self(3);
    pub(super) const PERMISSION_DENIED: Self = Self(7);
    pub(super) const INTERNAL: Self = Self(13);
    pub(super) const UNIMPLEMENTED: Self = Self(12);
    pub(super) const UNAVAILABLE: Self = Self(14);
    pub(super) const UNAUTHENTICATED: Self = Self(16);

    /// The code's name, as gRPC spells it.
    pub(super) fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "Cancelled",
            "Unknown",
            "InvalidArgument",
            "DeadlineExceeded",
            "NotFound",
            "AlreadyExists",
            "PermissionDenied",
            "ResourceExhausted",
            "FailedPrecondition",
            "Aborted",
            "OutOfRange",
            "Unimplemented",
            "Internal",
            "Unavailable",
            "DataLoss",
            "Unauthenticated",
        ];
        usize::try_from(self.0)
            .ok()
            .and_then(|i| NAMES.get(i).copied())
            .unwrap_or("an unknown code")
    }

    /// The status of an answer that is not HTTP 200 (gRPC's "HTTP to gRPC
    /// status code mapping").
    fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::INTERNAL,
            401 => Self::UNAUTHENTICATED,
            403 => Self::PERMISSION_DENIED,
            404 => Self::UNIMPLEMENTED,
            429 | 502..=504 => Self::UNAVAILABLE,
            _ => Self::UNKNOWN,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a call gave no answer.
#[derive(Debug)]
pub(super) enum CallError {
    /// The connection could not be made.
    Connect(io::Error),
    /// The connection or HTTP/2 failed before the whole answer arrived.
    Transport(String),
    /// The agent answered a gRPC status other than OK.
    Status {
        /// The code.
        code: Code,
        /// The agent's message (`grpc-message`, decoded).
        message: String,
    },
    /// The answer does not follow gRPC or the message schema.
    Malformed(String),
}

fn transport(err: &h2::Error) -> CallError {
    match err.get_io() {
        Some(io) => CallError::Transport(io.to_string()),
        None => CallError::Transport(err.to_string()),
    }
}

/// Calls `method` with `request` at `endpoint`; the caller bounds the time.
pub(super) async fn unary<Req: prost::Message, Resp: prost::Message + Default>(
    endpoint: &Endpoint,
    method: &'static str,
    request: &Req,
) -> Result<Resp, CallError> {
    let body = frame(request);
    let answer = match endpoint {
        Endpoint::Unix(path) => {
            let io = tokio::net::UnixStream::connect(path)
                .await
                .map_err(CallError::Connect)?;
            exchange(io, method, body).await?
        }
        Endpoint::Tcp { host, port } => {
            let io = tokio::net::TcpStream::connect((*host, *port))
                .await
                .map_err(CallError::Connect)?;
            // One small request: do not let Nagle hold it.
            let _ = io.set_nodelay(true);
            exchange(io, method, body).await?
        }
        other => {
            return Err(CallError::Connect(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unsupported Workload API address {other:?}"),
            )))
        }
    };
    Resp::decode(message_of(&answer)?)
        .map_err(|e| CallError::Malformed(format!("the answer does not decode: {e}")))
}

/// A gRPC length-prefixed message: not compressed, then its length.
fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message
        .encode(&mut out)
        .expect("a Vec grows to any message");
    Bytes::from(out)
}

/// The one message of a unary answer's body.
fn message_of(body: &[u8]) -> Result<&[u8], CallError> {
    let bad = |what: &str| Err(CallError::Malformed(what.to_owned()));
    let Some((&[flag, a, b, c, d], rest)) = body.split_first_chunk::<5>() else {
        return bad("the answer has no gRPC message");
    };
    if flag != 0 {
        return bad("the answer is compressed, which was not asked for");
    }
    let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
    if rest.len() != len {
        return bad("the answer's length prefix does not match its body (one message expected)");
    }
    Ok(rest)
}

/// The HTTP/2 exchange on a connected socket. The connection is driven in
/// this task, beside the request, and closed when this returns: no task or
/// timer is left behind.
async fn exchange<T>(
    io: T,
    method: &'static str,
    body: Bytes,
) -> Result<Zeroizing<Vec<u8>>, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (client, connection) = h2::client::Builder::new()
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| transport(&e))?;
    let call = request(client, method, body);
    tokio::pin!(call, connection);
    tokio::select! {
        biased;
        answer = &mut call => answer,
        ended = &mut connection => match ended {
            Err(e) => Err(transport(&e)),
            // Closed by the agent: whatever arrived before is still read.
            Ok(()) => call.await,
        },
    }
}

async fn request(
    client: h2::client::SendRequest<Bytes>,
    method: &'static str,
    body: Bytes,
) -> Result<Zeroizing<Vec<u8>>, CallError> {
    let t = |e: h2::Error| transport(&e);
    let mut client = client.ready().await.map_err(t)?;
    let request = Request::post(format!("http://localhost{method}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, concat!("svid-exec/", env!("CARGO_PKG_VERSION")))
        // The Workload API's security header (spiffe.md §2.3).
        .header("workload.spiffe.io", "true")
        .body(())
        .expect("a request of constant parts");
    let (response, mut send) = client.send_request(request, false).map_err(t)?;
    send.send_data(body, true).map_err(t)?;
    let response = response.await.map_err(t)?;
    let (head, mut answer) = response.into_parts();
    if head.status != StatusCode::OK {
        return Err(CallError::Status {
            code: Code::from_http(head.status),
            message: format!("HTTP {}", head.status),
        });
    }
    // A "trailers-only" answer carries its status in the headers.
    if let Some(status) = status_of(&head.headers)? {
        return Err(status);
    }
    if head.headers.contains_key("grpc-status") {
        return Err(CallError::Malformed(
            "an OK answer without a message".to_owned(),
        ));
    }
    let mut chunks = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = answer.data().await {
        let chunk = chunk.map_err(t)?;
        let _ = answer.flow_control().release_capacity(chunk.len());
        len = len.saturating_add(chunk.len());
        if len > MAX_ANSWER_BYTES {
            return Err(CallError::Malformed(format!(
                "the answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        chunks.push(chunk);
    }
    let trailers = answer.trailers().await.map_err(t)?.unwrap_or_default();
    match status_of(&trailers)? {
        Some(status) => Err(status),
        None if trailers.contains_key("grpc-status") => {
            // One buffer of the exact size: no reallocation leaves a copy.
            let mut whole = Zeroizing::new(Vec::with_capacity(len));
            for chunk in &chunks {
                whole.extend_from_slice(chunk);
            }
            Ok(whole)
        }
        None => Err(CallError::Malformed(
            "the answer has no grpc-status".to_owned(),
        )),
    }
}

/// The error in `grpc-status`/`grpc-message`, `None` when the status is OK or absent.
fn status_of(headers: &HeaderMap) -> Result<Option<CallError>, CallError> {
    let Some(value) = headers.get("grpc-status") else {
        return Ok(None);
    };
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .ok_or_else(|| CallError::Malformed("grpc-status is not a number".to_owned()))?;
    if code == 0 {
        return Ok(None);
    }
    let message = headers
        .get("grpc-message")
        .map(|m| decode_grpc_message(m.as_bytes()))
        .unwrap_or_default();
    Ok(Some(CallError::Status {
        code: Code(code),
        message,
    }))
}

/// `grpc-message` is percent-encoded UTF-8; a bad escape is kept as it is.
fn decode_grpc_message(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_uncompressed_length_prefixed_message() {
        let request = JwtSvidRequest {
            audience: vec!["infisical".into()],
            spiffe_id: String::new(),
        };
        let framed = frame(&request);
        // field 1, length-delimited, 9 bytes: "infisical"; an empty field 2 is not sent.
        assert_eq!(&framed[..], b"\x00\x00\x00\x00\x0b\x0a\x09infisical");
        assert_eq!(message_of(&framed).ok(), Some(&b"\x0a\x09infisical"[..]));
    }

    #[test]
    fn a_body_that_is_not_exactly_one_message_is_malformed() {
        for body in [
            &b""[..],
            b"\x00\x00\x00",
            b"\x01\x00\x00\x00\x00",
            b"\x00\x00\x00\x00\x02\x0a",
        ] {
            assert!(
                matches!(message_of(body), Err(CallError::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn statuses_are_read_from_headers_with_their_message_decoded() {
        let mut headers = HeaderMap::new();
        assert!(status_of(&headers).unwrap().is_none());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(status_of(&headers).unwrap().is_none());
        headers.insert("grpc-status", "7".parse().unwrap());
        headers.insert("grpc-message", "no%20identity%20issued%zz".parse().unwrap());
        let Some(CallError::Status { code, message }) = status_of(&headers).unwrap() else {
            panic!("a status");
        };
        assert_eq!(code, Code::PERMISSION_DENIED);
        assert_eq!(code.name(), "PermissionDenied");
        assert_eq!(message, "no identity issued%zz");
        headers.insert("grpc-status", "x".parse().unwrap());
        assert!(status_of(&headers).is_err());
        assert_eq!(Code(99).name(), "an unknown code");
        assert_eq!(
            Code::from_http(StatusCode::SERVICE_UNAVAILABLE),
            Code::UNAVAILABLE
        );
        assert_eq!(Code::from_http(StatusCode::NOT_FOUND), Code::UNIMPLEMENTED);
    }

    #[test]
    fn an_entry_never_shows_its_token() {
        let entry = JwtSvidEntry {
            spiffe_id: "spiffe://example.org/w".into(),
            svid: "eyJhbGciOi.payload.signature".into(),
            hint: String::new(),
        };
        let shown = format!("{entry:?}");
        assert!(shown.contains("spiffe://example.org/w"));
        assert!(!shown.contains("payload"), "{shown}");
    }
}

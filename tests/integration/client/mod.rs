//! The client side through the library API, against the stand-ins: the
//! Infisical client and the session (`infisical`), the JWT-SVID sources
//! (`svid`), the transport's TLS and retry rules (`tls`); and, through the
//! real binary, the trust rules and misconfiguration answers (`trust`).

mod infisical;
mod support;
mod svid;
mod tls;
mod trust;

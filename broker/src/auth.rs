//! The authentication seam. The broker asks an [`Authenticator`] about every
//! CONNECT; later work plugs password files, client certificates and
//! webhooks in behind the same trait. The embedded default,
//! [`AnonymousAuth`], knows no enhanced-authentication method.

use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// What a client presented in CONNECT.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    /// Client identifier (possibly server-assigned).
    pub client_id: &'a str,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Password, if any.
    pub password: Option<&'a [u8]>,
    /// Remote address.
    pub peer: SocketAddr,
    /// Common name of a verified TLS client certificate.
    pub cert_cn: Option<&'a str>,
    /// 5.0 Authentication Method.
    pub method: Option<&'a str>,
    /// 5.0 Authentication Data.
    pub data: Option<&'a Bytes>,
}

/// Why a client is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Wrong user name or password (5.0 0x86, 3.x 4).
    BadCredentials,
    /// Not allowed to connect (5.0 0x87, 3.x 5).
    NotAuthorized,
    /// Unknown 5.0 authentication method (0x8C).
    BadAuthenticationMethod,
}

/// The verdict on a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Accepted; `username` is the identity the broker records.
    Allow {
        /// Identity for logs and authorization.
        username: Option<String>,
    },
    /// Refused.
    Deny(Denied),
}

/// A boxed future, as trait methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides who may connect.
pub trait Authenticator: Send + Sync + 'static {
    /// Judges one CONNECT.
    fn authenticate<'a>(&'a self, req: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision>;
}

/// The embedded default: anonymous clients allowed or not, no password
/// database, and no enhanced-authentication method.
#[derive(Debug, Clone)]
pub struct AnonymousAuth {
    /// Accept clients that present no user name.
    pub allow_anonymous: bool,
}

impl Authenticator for AnonymousAuth {
    fn authenticate<'a>(&'a self, req: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        let decision = if req.method.is_some() {
            AuthDecision::Deny(Denied::BadAuthenticationMethod)
        } else if req.username.is_none() && req.cert_cn.is_none() && !self.allow_anonymous {
            AuthDecision::Deny(Denied::NotAuthorized)
        } else {
            AuthDecision::Allow {
                username: req.username.or(req.cert_cn).map(str::to_owned),
            }
        };
        Box::pin(std::future::ready(decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(user: Option<&'a str>, method: Option<&'a str>) -> AuthRequest<'a> {
        AuthRequest {
            client_id: "c",
            username: user,
            password: None,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            cert_cn: None,
            method,
            data: None,
        }
    }

    #[tokio::test]
    async fn anonymous_rules() {
        let open = AnonymousAuth {
            allow_anonymous: true,
        };
        let closed = AnonymousAuth {
            allow_anonymous: false,
        };
        assert_eq!(
            open.authenticate(req(None, None)).await,
            AuthDecision::Allow { username: None }
        );
        assert_eq!(
            closed.authenticate(req(None, None)).await,
            AuthDecision::Deny(Denied::NotAuthorized)
        );
        assert_eq!(
            open.authenticate(req(None, Some("SCRAM"))).await,
            AuthDecision::Deny(Denied::BadAuthenticationMethod)
        );
    }
}

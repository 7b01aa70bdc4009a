//! Authentication and authorization seams. The broker asks an
//! [`Authenticator`] about every CONNECT and an [`Authorizer`] about every
//! PUBLISH, SUBSCRIBE and delivery. The embedded default allows anonymous
//! clients and everything ([`AnonymousAuth`], [`AllowAll`]); a password file
//! and an ACL file ([`files`]) are configured under `[auth]`; webhooks can
//! plug in behind the same traits.

pub mod acl;
#[cfg(test)]
mod acl_tests;
pub mod files;
pub mod password;

use crate::config::AuthConfig;
use std::sync::Arc;

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

/// Decides what an authenticated client may do.
pub trait Authorizer: Send + Sync + 'static {
    /// May the client publish to `topic` (also checked for its will)?
    fn can_publish(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool;
    /// May the client subscribe to `filter`?
    fn can_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool;
    /// May the client receive a message published to `topic`?
    fn can_read(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool;
    /// False if everything is allowed, so the publish path can skip checks.
    fn restricts(&self) -> bool;
}

/// Everything is allowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn can_publish(&self, _: &str, _: Option<&str>, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &str, _: Option<&str>, _: &str) -> bool {
        true
    }
    fn can_read(&self, _: &str, _: Option<&str>, _: &str) -> bool {
        true
    }
    fn restricts(&self) -> bool {
        false
    }
}

/// A configured file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password file.
    #[error("password file {path}: {source}")]
    Passwords {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: password::PasswordError,
    },
    /// The ACL file.
    #[error("ACL file {path}: {source}")]
    Acl {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// An authenticator and an authorizer, as the broker holds them.
pub type AuthPair = (Arc<dyn Authenticator>, Arc<dyn Authorizer>);

/// The authenticator and authorizer that `[auth]` describes. Files are
/// loaded now (errors name the file) and reloaded when they change.
pub fn from_config(cfg: &AuthConfig) -> Result<AuthPair, AuthError> {
    let passwords = match &cfg.password_file {
        Some(path) => Some(
            files::Reloading::watch(path.clone(), |p| password::PasswordFile::load(p, false))
                .map_err(|source| AuthError::Passwords {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let authn: Arc<dyn Authenticator> = Arc::new(files::FileAuth {
        passwords,
        allow_anonymous: cfg.allow_anonymous,
    });
    let authz: Arc<dyn Authorizer> = match &cfg.acl_file {
        Some(path) => {
            let load = |p: &std::path::Path| -> Result<acl::Acl, Box<dyn std::error::Error + Send + Sync>> {
                let text = std::fs::read_to_string(p)?;
                Ok(acl::Acl::parse(&text)?)
            };
            let acl =
                files::Reloading::watch(path.clone(), load).map_err(|source| AuthError::Acl {
                    path: path.display().to_string(),
                    source,
                })?;
            Arc::new(files::AclAuthorizer { acl })
        }
        None => Arc::new(AllowAll),
    };
    Ok((authn, authz))
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

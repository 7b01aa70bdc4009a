//! Authentication and authorization seams. The broker asks an
//! [`Authenticator`] about every CONNECT and an [`Authorizer`] about every
//! PUBLISH, SUBSCRIBE and delivery. The embedded default allows anonymous
//! clients and everything ([`AnonymousAuth`], [`AllowAll`]); a password file
//! and an ACL file ([`files`]) are configured under `[auth]`; HTTP webhooks
//! ([`webhook`]) are asked first when configured, and fall through to the
//! files when they answer `next`.

pub mod acl;
#[cfg(test)]
mod acl_tests;
pub mod files;
pub mod password;
pub mod webhook;

use crate::config::AuthConfig;
use crate::metrics::Metrics;
use std::sync::Arc;

use crate::codec::QoS;
use bytes::Bytes;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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
    /// Remote address (the PROXY protocol source when there is one).
    pub peer: SocketAddr,
    /// Clean session (3.x) / clean start (5.0).
    pub clean_start: bool,
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

/// The client an authorization question is about.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// The identity the authenticator recorded.
    pub username: Option<&'a str>,
    /// The client's address: the source a PROXY protocol header names, else
    /// the socket's peer.
    pub addr: IpAddr,
}

/// A PUBLISH (or a will) as an authorizer that looks at content sees it.
#[derive(Debug, Clone, Copy)]
pub struct PublishInfo<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Requested QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Payload.
    pub payload: &'a Bytes,
}

/// A decision available now or after a remote service answers.
pub enum Check<T> {
    /// Decided.
    Now(T),
    /// Decided once this completes (bounded by the service's timeout).
    Later(BoxFuture<'static, T>),
}

impl<T> Check<T> {
    /// Waits for the decision.
    pub async fn decide(self) -> T {
        match self {
            Check::Now(v) => v,
            Check::Later(f) => f.await,
        }
    }
}

/// Decides what an authenticated client may do.
pub trait Authorizer: Send + Sync + 'static {
    /// May the client publish to `topic` (also checked for its will)?
    fn can_publish(&self, client: &Client<'_>, topic: &str) -> bool;
    /// May the client subscribe to `filter`?
    fn can_subscribe(&self, client: &Client<'_>, filter: &str) -> bool;
    /// May the client receive a message published to `topic`?
    fn can_read(&self, client: &Client<'_>, topic: &str) -> bool;
    /// False if everything is allowed, so the publish path can skip checks.
    fn restricts(&self) -> bool;

    /// A PUBLISH with its content: what the connection asks. Authorizers
    /// that consult a remote service answer [`Check::Later`].
    fn check_publish(&self, client: &Client<'_>, p: &PublishInfo<'_>) -> Check<bool> {
        Check::Now(self.can_publish(client, p.topic))
    }

    /// A SUBSCRIBE's filters with their QoS: one verdict per filter.
    fn check_subscribe(&self, client: &Client<'_>, filters: &[(&str, QoS)]) -> Check<Vec<bool>> {
        Check::Now(
            filters
                .iter()
                .map(|(f, _)| self.can_subscribe(client, f))
                .collect(),
        )
    }
}

/// Everything is allowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn can_publish(&self, _: &Client<'_>, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &Client<'_>, _: &str) -> bool {
        true
    }
    fn can_read(&self, _: &Client<'_>, _: &str) -> bool {
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
    /// The webhooks.
    #[error(transparent)]
    Webhooks(#[from] webhook::WebhookError),
}

/// An authenticator and an authorizer, as the broker holds them.
pub type AuthPair = (Arc<dyn Authenticator>, Arc<dyn Authorizer>);

/// The authenticator and authorizer that `[auth]` describes: webhooks (if
/// any) in front of the files. Files are loaded now (errors name the file)
/// and reloaded when they change.
pub fn from_config(cfg: &AuthConfig, metrics: &Metrics) -> Result<AuthPair, AuthError> {
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
    let hooks = webhook::Webhooks::from_config(
        &cfg.webhooks,
        cfg.webhook_cache_max_entries,
        metrics.webhooks.clone(),
    )?;
    Ok(match hooks {
        None => (authn, authz),
        Some(hooks) => (
            Arc::new(webhook::HookAuthenticator {
                hooks: hooks.clone(),
                inner: authn,
            }),
            Arc::new(webhook::HookAuthorizer {
                hooks,
                inner: authz,
            }),
        ),
    })
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
            clean_start: true,
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

//! Authentication and authorization backed by files that are reloaded
//! when they change: the password file and the ACL file.

use super::acl::Acl;
use super::password::PasswordFile;
use super::{AuthDecision, AuthRequest, Authenticator, Authorizer, BoxFuture, Client, Denied};
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a watched file's modification time is checked.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// A value loaded from a file and swapped in whole when the file changes.
/// A file that no longer parses is logged and the last good value kept.
pub struct Reloading<T> {
    current: RwLock<Arc<T>>,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Loads `path` now (an error here is fatal to the caller) and, inside a
    /// runtime, watches it for changes.
    pub fn watch<E: std::fmt::Display>(
        path: PathBuf,
        load: impl Fn(&Path) -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Arc<Reloading<T>>, E> {
        let value = load(&path)?;
        let this = Arc::new(Reloading {
            current: RwLock::new(Arc::new(value)),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&this);
            tokio::spawn(async move {
                let mut seen = modified(&path);
                loop {
                    tokio::time::sleep(RELOAD_EVERY).await;
                    let Some(this) = weak.upgrade() else { return };
                    let now = modified(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match load(&path) {
                        Ok(v) => {
                            *this.current.write() = Arc::new(v);
                            tracing::info!(file = %path.display(), "reloaded");
                        }
                        Err(e) => {
                            tracing::error!(file = %path.display(), error = %e, "reload failed; keeping the previous version")
                        }
                    }
                }
            });
        }
        Ok(this)
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.current.read().clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Password-file authentication, with anonymous access as configured and a
/// verified TLS client certificate's CN accepted as the user name.
pub struct FileAuth {
    /// The password file, if configured.
    pub passwords: Option<Arc<Reloading<PasswordFile>>>,
    /// Accept clients that present no user name.
    pub allow_anonymous: bool,
}

impl Authenticator for FileAuth {
    fn authenticate<'a>(&'a self, req: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async move {
            if req.method.is_some() {
                return AuthDecision::Deny(Denied::BadAuthenticationMethod);
            }
            let (Some(user), Some(passwords)) = (req.username, &self.passwords) else {
                // No password to check: a user name is taken as given (no
                // password file), a verified certificate's CN is an identity,
                // and nothing at all is anonymous.
                return match (req.username.or(req.cert_cn), self.allow_anonymous) {
                    (Some(identity), _) => AuthDecision::Allow {
                        username: Some(identity.to_owned()),
                    },
                    (None, true) => AuthDecision::Allow { username: None },
                    (None, false) => AuthDecision::Deny(Denied::NotAuthorized),
                };
            };
            let file = passwords.get();
            let (user_owned, password) = (
                user.to_owned(),
                req.password.map(<[u8]>::to_vec).unwrap_or_default(),
            );
            // argon2 is slow on purpose: keep it off the async workers.
            let ok = tokio::task::spawn_blocking(move || file.verify(&user_owned, &password))
                .await
                .unwrap_or(false);
            if ok {
                AuthDecision::Allow {
                    username: Some(user.to_owned()),
                }
            } else {
                AuthDecision::Deny(Denied::BadCredentials)
            }
        })
    }
}

/// ACL-file authorization.
pub struct AclAuthorizer {
    /// The ACL.
    pub acl: Arc<Reloading<Acl>>,
}

impl Authorizer for AclAuthorizer {
    fn can_publish(&self, client: &Client<'_>, topic: &str) -> bool {
        self.acl.get().can_publish(client, topic)
    }

    fn can_subscribe(&self, client: &Client<'_>, filter: &str) -> bool {
        self.acl.get().can_subscribe(client, filter)
    }

    fn can_read(&self, client: &Client<'_>, topic: &str) -> bool {
        self.acl.get().can_read(client, topic)
    }

    fn restricts(&self) -> bool {
        true
    }
}

//! Authentication and authorization by HTTP webhooks, in the manner of
//! VerneMQ's `vmq_webhooks`: `auth_on_register` (CONNECT),
//! `auth_on_publish` (PUBLISH and a will) and `auth_on_subscribe`
//! (SUBSCRIBE) are POSTed as JSON to the configured endpoints.
//!
//! Chain: the endpoints of a hook are asked in order; `ok` allows, an
//! `error` refuses, `next` asks the next endpoint and, after the last, the
//! file-based authenticator and ACL ([`HookAuthenticator`],
//! [`HookAuthorizer`] wrap them). A failed call (timeout, connection
//! error, non-200, unreadable answer) refuses (fail closed) unless the
//! endpoint is `fail_open`, when it counts as `next`.
//!
//! Answers, refusals and `next` included, are cached per endpoint by a
//! digest of the request fields ([`wire`] names them) for
//! `cache-control: max-age` seconds, else `cache_ttl_s`. A cached decision
//! is answered at once; otherwise the caller gets a future, which only the
//! client that asked waits on.

mod cache;
mod http;
pub mod wire;

use super::{
    AuthDecision, AuthRequest, Authenticator, Authorizer, BoxFuture, Check, Client, Denied,
    PublishInfo,
};
use crate::codec::QoS;
use crate::config::{HookKind, WebhookConfig};
use crate::metrics::{HookLabel, WebhookMetrics};
use cache::Cache;
use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::{Key, Reply, Request};

pub use self::http::{CallError, HttpClient};

/// What the webhooks of one hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; for SUBSCRIBE, maybe per filter.
    Allow {
        /// Per-filter verdicts (subscribe only; `None`: all allowed).
        topics: Option<Vec<bool>>,
    },
    /// Every endpoint said `next`: the files decide.
    Next,
    /// Refused, with the reason (the endpoint's, or the failure).
    Deny(String),
}

struct Endpoint {
    kind: HookKind,
    uri: ::http::Uri,
    timeout: Duration,
    ttl: Duration,
    fail_open: bool,
    cache: Mutex<Cache<Key, Reply>>,
}

/// Every configured webhook, the HTTP client they share, and their metrics.
pub struct Webhooks {
    register: Vec<Endpoint>,
    publish: Vec<Endpoint>,
    subscribe: Vec<Endpoint>,
    client: HttpClient,
    metrics: WebhookMetrics,
}

/// A webhook set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// An endpoint is not a URL (validation normally catches this first).
    #[error("webhook endpoint {endpoint:?}: {source}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// The parse failure.
        #[source]
        source: ::http::uri::InvalidUri,
    },
    /// The TLS client could not be set up.
    #[error("webhook TLS client: {0}")]
    Tls(#[from] rustls::Error),
}

fn label(kind: HookKind) -> HookLabel {
    [("hook", kind.name())]
}

impl Webhooks {
    /// The configured webhooks, or `None` if there are none.
    pub fn from_config(
        hooks: &[WebhookConfig],
        cache_max: usize,
        metrics: WebhookMetrics,
    ) -> Result<Option<Arc<Webhooks>>, WebhookError> {
        if hooks.is_empty() {
            return Ok(None);
        }
        let https = hooks.iter().any(|h| h.endpoint.starts_with("https:"));
        let mut this = Webhooks {
            register: Vec::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
            client: HttpClient::new(https)?,
            metrics,
        };
        for h in hooks {
            let uri = h
                .endpoint
                .parse()
                .map_err(|source| WebhookError::Endpoint {
                    endpoint: h.endpoint.clone(),
                    source,
                })?;
            let ep = Endpoint {
                kind: h.hook,
                uri,
                timeout: Duration::from_millis(h.timeout_ms),
                ttl: Duration::from_secs(h.cache_ttl_s),
                fail_open: h.fail_open,
                cache: Mutex::new(Cache::new(cache_max)),
            };
            match h.hook {
                HookKind::AuthOnRegister => this.register.push(ep),
                HookKind::AuthOnPublish => this.publish.push(ep),
                HookKind::AuthOnSubscribe => this.subscribe.push(ep),
            }
        }
        Ok(Some(Arc::new(this)))
    }

    fn endpoints(&self, kind: HookKind) -> &[Endpoint] {
        match kind {
            HookKind::AuthOnRegister => &self.register,
            HookKind::AuthOnPublish => &self.publish,
            HookKind::AuthOnSubscribe => &self.subscribe,
        }
    }

    /// Whether any endpoint answers `kind`.
    pub fn has(&self, kind: HookKind) -> bool {
        !self.endpoints(kind).is_empty()
    }

    /// The decision on `req`: at once if cached answers settle it, else a
    /// future that calls the endpoints (each within its timeout).
    pub fn check(self: &Arc<Self>, kind: HookKind, req: Request) -> Check<Decision> {
        match self.cached(kind, &req, 0) {
            Ok(d) => Check::Now(self.count(kind, d)),
            Err(first_miss) => {
                let this = self.clone();
                Check::Later(Box::pin(async move {
                    let d = this.ask(kind, &req, first_miss).await;
                    this.count(kind, d)
                }))
            }
        }
    }

    /// Walks cached answers from endpoint `from` on: `Ok` if they decide,
    /// `Err(i)` if endpoint `i` has to be called.
    fn cached(&self, kind: HookKind, req: &Request, from: usize) -> Result<Decision, usize> {
        let now = Instant::now();
        for (i, ep) in self.endpoints(kind).iter().enumerate().skip(from) {
            let Some(reply) = ep.cache.lock().get(&req.key, now) else {
                return Err(i);
            };
            self.metrics.cache_hits.get_or_create(&label(kind)).inc();
            match reply {
                Reply::Next => continue,
                Reply::Ok { topics } => return Ok(Decision::Allow { topics }),
                Reply::Error(why) => return Ok(Decision::Deny(why)),
            }
        }
        Ok(Decision::Next)
    }

    /// Calls endpoint `i` and goes on down the chain as its answer says.
    async fn ask(&self, kind: HookKind, req: &Request, mut i: usize) -> Decision {
        loop {
            let ep = &self.endpoints(kind)[i];
            match self.call(ep, req).await {
                Ok(Reply::Ok { topics }) => return Decision::Allow { topics },
                Ok(Reply::Error(why)) => return Decision::Deny(why),
                Ok(Reply::Next) => {}
                Err(_) if ep.fail_open => {}
                Err(e) => return Decision::Deny(format!("webhook failed: {e}")),
            }
            match self.cached(kind, req, i + 1) {
                Ok(d) => return d,
                Err(next) => i = next,
            }
        }
    }

    /// One call; a readable answer is cached as `cache-control` allows.
    async fn call(&self, ep: &Endpoint, req: &Request) -> Result<Reply, String> {
        let l = label(ep.kind);
        self.metrics.calls.get_or_create(&l).inc();
        let start = Instant::now();
        let answer = self
            .client
            .post(&ep.uri, ep.kind.name(), req.body.clone(), ep.timeout)
            .await;
        self.metrics
            .latency
            .get_or_create(&l)
            .observe(start.elapsed().as_secs_f64());
        let read = answer.map_err(|e| e.to_string()).and_then(|a| {
            let reply = wire::parse(&req.expect, &a.body)?;
            Ok((reply, a.cache_control))
        });
        match read {
            Ok((reply, cache_control)) => {
                let ttl = cache::ttl(cache_control.as_deref(), ep.ttl);
                ep.cache
                    .lock()
                    .insert(req.key, reply.clone(), ttl, Instant::now());
                Ok(reply)
            }
            Err(e) => {
                self.metrics.failures.get_or_create(&l).inc();
                tracing::warn!(hook = ep.kind.name(), endpoint = %ep.uri, error = %e, fail_open = ep.fail_open, "webhook call failed");
                Err(e)
            }
        }
    }

    fn count(&self, kind: HookKind, d: Decision) -> Decision {
        if let Decision::Deny(_) = d {
            self.metrics.denials.get_or_create(&label(kind)).inc();
        }
        d
    }
}

/// The CONNECT reason for a refusal: an endpoint's `invalid_credentials`
/// (or `bad_username_or_password`) is a bad password (5.0 0x86, 3.x 4),
/// anything else, failures included, is "not authorized" (0x87, 3.x 5).
fn refusal(why: &str) -> Denied {
    match why {
        "invalid_credentials" | "bad_username_or_password" => Denied::BadCredentials,
        _ => Denied::NotAuthorized,
    }
}

/// `auth_on_register` webhooks in front of another authenticator.
pub struct HookAuthenticator {
    /// The webhooks.
    pub hooks: Arc<Webhooks>,
    /// Asked when the webhooks say `next`.
    pub inner: Arc<dyn Authenticator>,
}

impl Authenticator for HookAuthenticator {
    fn authenticate<'a>(&'a self, req: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async move {
            // Enhanced authentication has no webhook: the inner one refuses it.
            if req.method.is_some() || !self.hooks.has(HookKind::AuthOnRegister) {
                return self.inner.authenticate(req).await;
            }
            let asked = wire::register(
                req.client_id,
                req.username,
                req.password,
                req.peer,
                req.clean_start,
            );
            match self
                .hooks
                .check(HookKind::AuthOnRegister, asked)
                .decide()
                .await
            {
                Decision::Allow { .. } => AuthDecision::Allow {
                    username: req.username.or(req.cert_cn).map(str::to_owned),
                },
                Decision::Next => self.inner.authenticate(req).await,
                Decision::Deny(why) => {
                    // Never log the password.
                    tracing::info!(client_id = req.client_id, username = ?req.username, peer = %req.peer, why = %why, "webhook refused CONNECT");
                    AuthDecision::Deny(refusal(&why))
                }
            }
        })
    }
}

/// A [`Client`] that a future can own.
struct OwnedClient {
    client_id: String,
    username: Option<String>,
    addr: IpAddr,
}

impl OwnedClient {
    fn of(c: &Client<'_>) -> OwnedClient {
        OwnedClient {
            client_id: c.client_id.to_owned(),
            username: c.username.map(str::to_owned),
            addr: c.addr,
        }
    }

    fn client(&self) -> Client<'_> {
        Client {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            addr: self.addr,
        }
    }
}

/// `auth_on_publish` and `auth_on_subscribe` webhooks in front of another
/// authorizer. Deliveries (`can_read`) are the inner authorizer's alone:
/// no hook is asked per delivered message.
pub struct HookAuthorizer {
    /// The webhooks.
    pub hooks: Arc<Webhooks>,
    /// Asked when the webhooks say `next`, and for deliveries.
    pub inner: Arc<dyn Authorizer>,
}

impl Authorizer for HookAuthorizer {
    fn can_publish(&self, client: &Client<'_>, topic: &str) -> bool {
        self.inner.can_publish(client, topic)
    }

    fn can_subscribe(&self, client: &Client<'_>, filter: &str) -> bool {
        self.inner.can_subscribe(client, filter)
    }

    fn can_read(&self, client: &Client<'_>, topic: &str) -> bool {
        self.inner.can_read(client, topic)
    }

    fn restricts(&self) -> bool {
        self.inner.restricts()
    }

    fn check_publish(&self, client: &Client<'_>, p: &PublishInfo<'_>) -> Check<bool> {
        if !self.hooks.has(HookKind::AuthOnPublish) {
            return self.inner.check_publish(client, p);
        }
        let asked = wire::publish(
            client.client_id,
            client.username,
            p.topic,
            p.qos,
            p.retain,
            p.payload,
        );
        match self.hooks.check(HookKind::AuthOnPublish, asked) {
            Check::Now(d) => Check::Now(may_publish(d, &*self.inner, client, p.topic)),
            Check::Later(f) => {
                let (inner, owned, topic) = (
                    self.inner.clone(),
                    OwnedClient::of(client),
                    p.topic.to_owned(),
                );
                Check::Later(Box::pin(async move {
                    may_publish(f.await, &*inner, &owned.client(), &topic)
                }))
            }
        }
    }

    fn check_subscribe(&self, client: &Client<'_>, filters: &[(&str, QoS)]) -> Check<Vec<bool>> {
        if !self.hooks.has(HookKind::AuthOnSubscribe) || filters.is_empty() {
            return self.inner.check_subscribe(client, filters);
        }
        let asked = wire::subscribe(client.client_id, client.username, filters);
        let owned: Vec<String> = filters.iter().map(|(f, _)| (*f).to_owned()).collect();
        match self.hooks.check(HookKind::AuthOnSubscribe, asked) {
            Check::Now(d) => Check::Now(may_subscribe(d, &*self.inner, client, &owned)),
            Check::Later(f) => {
                let (inner, who) = (self.inner.clone(), OwnedClient::of(client));
                Check::Later(Box::pin(async move {
                    may_subscribe(f.await, &*inner, &who.client(), &owned)
                }))
            }
        }
    }
}

/// A PUBLISH verdict: the webhooks', or the inner authorizer's on `next`.
fn may_publish(d: Decision, inner: &dyn Authorizer, c: &Client<'_>, topic: &str) -> bool {
    match d {
        Decision::Allow { .. } => true,
        Decision::Deny(_) => false,
        Decision::Next => inner.can_publish(c, topic),
    }
}

/// SUBSCRIBE verdicts, one per filter, decided the same way.
fn may_subscribe(d: Decision, inner: &dyn Authorizer, c: &Client<'_>, fs: &[String]) -> Vec<bool> {
    match d {
        Decision::Allow { topics } => topics.unwrap_or_else(|| vec![true; fs.len()]),
        Decision::Deny(_) => vec![false; fs.len()],
        Decision::Next => fs.iter().map(|f| inner.can_subscribe(c, f)).collect(),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

//! The `kubernetes` source: a watch on the EndpointSlices of
//! `discovery.service` (label `kubernetes.io/service-name`) in the pod's
//! namespace, with kube-rs' `watcher(..).default_backoff()`.
//!
//! - Not-ready endpoints are peers (pods join the mesh before they are
//!   Ready: `conditions.ready` is ignored); only `terminating == true`
//!   endpoints are dropped.
//! - A peer's name is its `targetRef.name` (kind Pod), else its `hostname`;
//!   its address is `ip:port`, the port being the slice's port named `mesh`
//!   when it has one, else the configured mesh port.
//! - [`SliceCache`] is the I/O-free core: it folds watcher events into the
//!   current slices, buffering a (re-)list until `InitDone` so that a 410
//!   Gone or an API-server restart re-lists without the set flapping.
//! - Errors are [`classify`]'d: a 410 is routine (the watcher re-lists); a
//!   failed list is an `Error` until a list succeeds; a failed watch keeps
//!   the last set and readiness (the watcher resumes from its
//!   resourceVersion); a 401/403 reads "RBAC: endpointslices is forbidden …"
//!   and keeps readiness false while the watcher retries with its backoff
//!   (after a denied *watch* the source re-lists, since only a list tells it
//!   that access is back).

mod slices;

pub use slices::{peers_from_slices, SliceCache, MESH_PORT_NAME};

use crate::{
    publish, DiscoveryConfig, DiscoveryError, OwnIdentity, PeerSet, PeerSource, Result,
    SourceStatus, StatusHandle,
};
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Watches a Service's EndpointSlices.
#[derive(Clone)]
pub struct KubernetesSource {
    client: Option<Client>,
    namespace: String,
    service: String,
    mesh_port: u16,
    own: OwnIdentity,
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("namespace", &self.namespace)
            .field("service", &self.service)
            .field("mesh_port", &self.mesh_port)
            .finish_non_exhaustive()
    }
}

impl KubernetesSource {
    /// The source `cfg` describes (`kubernetes` mode). The API client is
    /// built in [`run`](PeerSource::run) from the in-cluster (or kubeconfig)
    /// environment.
    pub fn from_config(cfg: &DiscoveryConfig, mesh_port: u16, own: &OwnIdentity) -> Result<Self> {
        let service = cfg.service.trim();
        if service.is_empty() {
            return Err(DiscoveryError::Missing {
                key: "service",
                mode: "kubernetes",
            });
        }
        let namespace = own
            .namespace_or(&cfg.namespace)
            .ok_or(DiscoveryError::NoNamespace)?;
        Ok(KubernetesSource::new(
            namespace,
            service,
            mesh_port,
            own.clone(),
        ))
    }

    /// A source for `service` in `namespace`.
    pub fn new(namespace: String, service: &str, mesh_port: u16, own: OwnIdentity) -> Self {
        KubernetesSource {
            client: None,
            namespace,
            service: service.to_string(),
            mesh_port,
            own,
        }
    }

    /// Uses `client` instead of inferring one (tests pass a scripted one).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the client from the environment, retrying until it works or
    /// `shutdown` is cancelled.
    async fn client(
        &mut self,
        status: &StatusHandle,
        shutdown: &CancellationToken,
    ) -> Option<Client> {
        if let Some(client) = self.client.take() {
            return Some(client);
        }
        let mut delay = Duration::from_millis(500);
        loop {
            match Client::try_default().await {
                Ok(client) => return Some(client),
                Err(e) => {
                    status.set(SourceStatus::Error(format!(
                        "kubernetes: cannot configure the API client: {e}"
                    )));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

impl PeerSource for KubernetesSource {
    fn run(
        mut self: Box<Self>,
        tx: watch::Sender<PeerSet>,
        status: StatusHandle,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Some(client) = self.client(&status, &shutdown).await else {
                return;
            };
            tracing::info!(namespace = %self.namespace, service = %self.service,
                "Kubernetes EndpointSlice peer discovery");
            let api: Api<EndpointSlice> = Api::namespaced(client, &self.namespace);
            let selector = format!("{SERVICE_NAME_LABEL}={}", self.service);
            let config = watcher::Config::default().labels(&selector);
            let new_stream = || {
                watcher::watcher(api.clone(), config.clone())
                    .default_backoff()
                    .boxed()
            };
            let mut events = new_stream();
            let mut cache = SliceCache::default();
            let mut restart_delay = RESTART_MIN_DELAY;
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                let err = match event {
                    Some(Ok(event)) => {
                        if matches!(event, Event::Apply(_) | Event::Delete(_)) {
                            // The watch demonstrably works again.
                            restart_delay = RESTART_MIN_DELAY;
                        }
                        if cache.apply(event) {
                            let set = peers_from_slices(cache.slices(), self.mesh_port, &self.own);
                            publish(&tx, set);
                            status.set(SourceStatus::Ok);
                        }
                        continue;
                    }
                    Some(Err(err)) => err,
                    // The watcher stream never ends on its own.
                    None => {
                        status.set(SourceStatus::Error(
                            "kubernetes: the EndpointSlice watch ended".into(),
                        ));
                        return;
                    }
                };
                match classify(&err, &self.namespace, &self.service) {
                    Verdict::Relist => {
                        tracing::info!(error = %err, "EndpointSlice watch expired; re-listing")
                    }
                    Verdict::ListFailed(message) => {
                        // Cleared by the next successful list (InitDone).
                        tracing::debug!(error = %err, "EndpointSlice list failed");
                        status.set(SourceStatus::Error(message));
                    }
                    Verdict::WatchFailed(message) => {
                        // The last set stays valid and the watcher resumes
                        // from its resourceVersion: not a readiness matter.
                        tracing::warn!(%message, "EndpointSlice watch failed; retrying");
                    }
                    Verdict::Denied(message) => {
                        status.set(SourceStatus::Error(message));
                        if is_watch_phase(&err) {
                            // A resumed watch emits nothing when it starts
                            // working again, so start over with a list, whose
                            // success clears the error.
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(restart_delay) => {}
                            }
                            restart_delay = (restart_delay * 2).min(RESTART_MAX_DELAY);
                            events = new_stream();
                        }
                    }
                }
            }
        })
    }
}

/// First and largest delay before re-listing after a denied watch.
const RESTART_MIN_DELAY: Duration = Duration::from_secs(1);
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);

/// What a watcher error means for the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 410 Gone: the watch expired and the watcher re-lists; nothing is wrong.
    Relist,
    /// The (re-)list failed: `Error` until a list succeeds.
    ListFailed(String),
    /// A watch failed (connection lost, API server restarting): the set is
    /// kept and the watcher retries; logged, readiness untouched.
    WatchFailed(String),
    /// 401/403: credentials or RBAC are wrong; `Error`, with the fix.
    Denied(String),
}

/// True for errors of the watch phase (after a successful list).
fn is_watch_phase(err: &watcher::Error) -> bool {
    matches!(
        err,
        watcher::Error::WatchStartFailed(_)
            | watcher::Error::WatchFailed(_)
            | watcher::Error::WatchError(_)
    )
}

/// Classifies a watcher error, with a message naming its cause.
pub fn classify(err: &watcher::Error, namespace: &str, service: &str) -> Verdict {
    let status = match err {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => Some(s),
        _ => None,
    };
    match status {
        Some(s) if s.code == 410 => Verdict::Relist,
        Some(s) if s.code == 403 => Verdict::Denied(format!(
            "RBAC: endpointslices is forbidden in namespace {namespace}: the pod's service \
             account needs get, list and watch on endpointslices.discovery.k8s.io \
             (API server: {})",
            s.message
        )),
        Some(s) if s.code == 401 => Verdict::Denied(format!(
            "kubernetes: unauthorized, the service account token was rejected (API server: {})",
            s.message
        )),
        _ => {
            let message = format!(
                "kubernetes: watching the EndpointSlices of service {service} in {namespace} \
                 failed: {err}"
            );
            if is_watch_phase(err) {
                Verdict::WatchFailed(message)
            } else {
                Verdict::ListFailed(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn from_config_needs_a_service_and_takes_the_configured_namespace() {
        let mut own = OwnIdentity::for_tests("tern-0", None);
        own.namespace = Some("from-env".into());
        let mut cfg = DiscoveryConfig {
            mode: crate::DiscoveryMode::Kubernetes,
            ..DiscoveryConfig::default()
        };
        assert!(matches!(
            KubernetesSource::from_config(&cfg, 4370, &own),
            Err(DiscoveryError::Missing { key: "service", .. })
        ));
        cfg.service = "tern-headless".into();
        let src = KubernetesSource::from_config(&cfg, 4370, &own).expect("valid");
        assert_eq!(src.namespace, "from-env");
        cfg.namespace = "messaging".into();
        let src = KubernetesSource::from_config(&cfg, 4370, &own).expect("valid");
        assert_eq!(
            (src.namespace.as_str(), src.service.as_str()),
            ("messaging", "tern-headless")
        );
    }

    #[test]
    fn classifies_watcher_errors() {
        let api = |code| {
            kube::Error::Api(
                Status::failure("denied", "Forbidden")
                    .with_code(code)
                    .boxed(),
            )
        };
        let c = |e| classify(&e, "messaging", "tern");
        assert_eq!(
            c(watcher::Error::WatchError(
                Status::failure("old", "Expired").with_code(410).boxed()
            )),
            Verdict::Relist
        );
        let Verdict::Denied(m) = c(watcher::Error::InitialListFailed(api(403))) else {
            panic!("403 is denied");
        };
        assert!(
            m.starts_with("RBAC: endpointslices is forbidden in namespace messaging"),
            "{m}"
        );
        assert!(matches!(
            c(watcher::Error::WatchStartFailed(api(401))),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            c(watcher::Error::InitialListFailed(api(500))),
            Verdict::ListFailed(_)
        ));
        assert!(matches!(
            c(watcher::Error::WatchStartFailed(api(500))),
            Verdict::WatchFailed(_)
        ));
        assert!(matches!(
            c(watcher::Error::NoResourceVersion),
            Verdict::ListFailed(_)
        ));
    }
}

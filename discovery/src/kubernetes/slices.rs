//! The I/O-free core of the `kubernetes` source: folding watcher events
//! into the current EndpointSlices ([`SliceCache`]) and mapping slices to
//! peers ([`peers_from_slices`]).

use crate::{join_host_port, OwnIdentity, Peer, PeerSet};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use std::collections::BTreeMap;

/// The name of the Service port that carries the mesh.
pub const MESH_PORT_NAME: &str = "mesh";

/// The current EndpointSlices, folded from watcher events.
#[derive(Debug, Default, Clone)]
pub struct SliceCache {
    current: BTreeMap<String, EndpointSlice>,
    listing: Option<BTreeMap<String, EndpointSlice>>,
    synced: bool,
}

impl SliceCache {
    /// Applies one event; true when the current slices may have changed
    /// and are complete (after the first `InitDone`).
    pub fn apply(&mut self, event: Event<EndpointSlice>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(slice) => {
                self.listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key(&slice), slice);
                false
            }
            Event::InitDone => {
                self.current = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(slice) => {
                self.current.insert(key(&slice), slice);
                self.synced
            }
            Event::Delete(slice) => {
                self.current.remove(&key(&slice));
                self.synced
            }
        }
    }

    /// The current slices.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.current.values()
    }
}

fn key(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The peers in `slices`: every endpoint not terminating, each address at
/// the slice's `mesh` port (else `mesh_port`), `own` left out.
pub fn peers_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    mesh_port: u16,
    own: &OwnIdentity,
) -> PeerSet {
    let mut set = PeerSet::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(MESH_PORT_NAME))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(mesh_port);
        for endpoint in &slice.endpoints {
            let terminating = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false);
            if terminating {
                continue;
            }
            let name = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone())
                .or_else(|| endpoint.hostname.clone());
            for address in &endpoint.addresses {
                let peer = Peer {
                    addr: join_host_port(address, port),
                    name: name.clone(),
                };
                if !own.is_self(&peer) {
                    set.insert(peer);
                }
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::Endpoint;
    use kube::core::ObjectMeta;

    fn slice(name: &str, ips: &[&str]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    addresses: vec![ip.to_string()],
                    ..Endpoint::default()
                })
                .collect(),
            ports: None,
        }
    }

    fn addrs(cache: &SliceCache) -> Vec<String> {
        let own = OwnIdentity::for_tests("self", None);
        peers_from_slices(cache.slices(), 4370, &own)
            .into_iter()
            .map(|p| p.addr)
            .collect()
    }

    #[test]
    fn a_relist_replaces_the_slices_only_when_complete() {
        let mut cache = SliceCache::default();
        assert!(!cache.apply(Event::Init));
        assert!(!cache.apply(Event::InitApply(slice("a", &["10.0.0.1"]))));
        assert!(cache.apply(Event::InitDone));
        assert!(cache.apply(Event::Apply(slice("b", &["10.0.0.2"]))));
        assert_eq!(addrs(&cache), ["10.0.0.1:4370", "10.0.0.2:4370"]);
        // A re-list in progress leaves the current slices alone...
        assert!(!cache.apply(Event::Init));
        assert!(!cache.apply(Event::InitApply(slice("b", &["10.0.0.3"]))));
        assert_eq!(addrs(&cache), ["10.0.0.1:4370", "10.0.0.2:4370"]);
        // ...and replaces them whole when done (slice a is gone).
        assert!(cache.apply(Event::InitDone));
        assert_eq!(addrs(&cache), ["10.0.0.3:4370"]);
        assert!(cache.apply(Event::Delete(slice("b", &[]))));
        assert!(addrs(&cache).is_empty());
    }

    #[test]
    fn events_before_the_first_list_are_not_published() {
        let mut cache = SliceCache::default();
        assert!(!cache.apply(Event::Apply(slice("a", &["10.0.0.1"]))));
    }
}

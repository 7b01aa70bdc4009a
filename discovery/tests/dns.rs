//! The `dns` source against a real DNS server: an in-process hickory-server
//! authority on 127.0.0.1, port 0 (UDP), serving A records for the headless
//! Service name that the source builds from service, namespace and a
//! non-default cluster domain.

use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tern_discovery::{
    from_config, spawn, DiscoveryConfig, DiscoveryMode, OwnIdentity, PeerSet, SourceStatus,
};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const ZONE: &str = "messaging.svc.tern.test.";
const NAME: &str = "tern-headless.messaging.svc.tern.test.";
const MESH_PORT: u16 = 4370;
const DEADLINE: Duration = Duration::from_secs(8);

/// A DNS server for one zone whose A records the test can change.
struct TestDns {
    authority: Arc<InMemoryAuthority>,
    server: ServerFuture<Catalog>,
    addr: SocketAddr,
    serial: u32,
}

impl TestDns {
    /// Serves `ips` as the A records of [`NAME`] on `addr` (port 0 picks one).
    async fn start(addr: SocketAddr, ips: &[[u8; 4]]) -> anyhow::Result<TestDns> {
        let origin = Name::from_ascii(ZONE)?;
        let authority = Arc::new(InMemoryAuthority::empty(
            origin.clone(),
            ZoneType::Primary,
            false,
        ));
        let soa = SOA::new(
            Name::from_ascii("ns.tern.test.")?,
            Name::from_ascii("admin.tern.test.")?,
            1,
            60,
            60,
            60,
            1,
        );
        authority
            .upsert(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1)
            .await;
        let mut catalog = Catalog::new();
        let object: Arc<dyn AuthorityObject> = authority.clone();
        catalog.upsert(LowerName::new(&origin), vec![object]);
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let mut server = ServerFuture::new(catalog);
        server.register_socket(socket);
        let mut dns = TestDns {
            authority,
            server,
            addr,
            serial: 1,
        };
        dns.set_a(ips).await?;
        Ok(dns)
    }

    /// Replaces the A records of [`NAME`] (TTL 1 s).
    async fn set_a(&mut self, ips: &[[u8; 4]]) -> anyhow::Result<()> {
        let name = Name::from_ascii(NAME)?;
        let lower = LowerName::new(&name);
        self.authority
            .records_mut()
            .await
            .retain(|key, _| !(key.name == lower && key.record_type == RecordType::A));
        self.serial += 1;
        for ip in ips {
            let record = Record::from_rdata(name.clone(), 1, RData::A(A(Ipv4Addr::from(*ip))));
            anyhow::ensure!(self.authority.upsert(record, self.serial).await, "upsert");
        }
        Ok(())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.server.shutdown_gracefully().await?;
        Ok(())
    }
}

fn config(server: SocketAddr) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Dns,
        service: "tern-headless".into(),
        namespace: "messaging".into(),
        cluster_domain: "tern.test".into(),
        dns_server: server.to_string(),
        dns_interval_secs: 1,
        ..DiscoveryConfig::default()
    }
}

fn own() -> OwnIdentity {
    OwnIdentity::for_tests("tern-0", Some(IpAddr::from([10, 0, 0, 10])))
}

fn addrs(set: &PeerSet) -> Vec<String> {
    set.iter().map(|p| p.addr.clone()).collect()
}

/// Waits until the published set's addresses are `want`, or fails.
async fn wait_addrs(rx: &mut tokio::sync::watch::Receiver<PeerSet>, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    let reached = matches!(
        tokio::time::timeout(DEADLINE, rx.wait_for(|s| addrs(s) == want)).await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "peer set never became {want:?}; last {:?}",
        addrs(&rx.borrow())
    );
}

#[tokio::test]
async fn resolves_the_headless_name_and_follows_record_changes() -> anyhow::Result<()> {
    let mut dns = TestDns::start(
        "127.0.0.1:0".parse()?,
        &[[10, 0, 0, 10], [10, 0, 0, 11], [10, 0, 0, 12]],
    )
    .await?;
    let shutdown = CancellationToken::new();
    let source = from_config(&config(dns.addr), MESH_PORT, &own())?;
    let mut d = spawn(source, shutdown.clone());

    // The node's own IP (10.0.0.10) is left out; names are unknown in DNS.
    wait_addrs(&mut d.peers, &["10.0.0.11:4370", "10.0.0.12:4370"]).await;
    assert!(d.peers.borrow().iter().all(|p| p.name.is_none()));
    assert_eq!(d.status.get(), SourceStatus::Ok);

    // A pod replaced: the next round publishes the new set.
    dns.set_a(&[[10, 0, 0, 12], [10, 0, 0, 13]]).await?;
    wait_addrs(&mut d.peers, &["10.0.0.12:4370", "10.0.0.13:4370"]).await;

    // No record at all (every other pod gone) is an empty set, not an error.
    dns.set_a(&[]).await?;
    wait_addrs(&mut d.peers, &[]).await;
    assert_eq!(d.status.get(), SourceStatus::Ok);

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, d.task).await??;
    dns.stop().await
}

#[tokio::test]
async fn a_dead_server_is_an_error_that_keeps_the_last_set_until_it_returns() -> anyhow::Result<()>
{
    let dns = TestDns::start("127.0.0.1:0".parse()?, &[[10, 0, 0, 11]]).await?;
    let addr = dns.addr;
    let shutdown = CancellationToken::new();
    let mut d = spawn(
        from_config(&config(addr), MESH_PORT, &own())?,
        shutdown.clone(),
    );
    wait_addrs(&mut d.peers, &["10.0.0.11:4370"]).await;

    dns.stop().await?;
    let mut status = d.status.subscribe();
    tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| matches!(s, SourceStatus::Error(m) if m.contains(NAME))),
    )
    .await??;
    assert!(!d.status.is_ready());
    assert_eq!(addrs(&d.peers.borrow()), ["10.0.0.11:4370"]);

    // The server restarts on the same port with other records.
    let dns = TestDns::start(addr, &[[10, 0, 0, 21], [10, 0, 0, 22]]).await?;
    wait_addrs(&mut d.peers, &["10.0.0.21:4370", "10.0.0.22:4370"]).await;
    tokio::time::timeout(DEADLINE, status.wait_for(|s| *s == SourceStatus::Ok)).await??;

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, d.task).await??;
    dns.stop().await
}

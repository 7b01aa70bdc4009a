//! Mutual TLS on the mesh (in memory): nodes with certificates from the
//! cluster CA link up; a node whose certificate chains to another CA is
//! refused both ways.

mod harness;

use anyhow::Result;
use harness::{within, Harness, Settings, Step, DEADLINE};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::Path;
use tern_broker::config::ClusterTlsConfig;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ok(Ca {
        cert: params.self_signed(&key)?,
        key,
    })
}

/// Writes a certificate for `name` signed by `ca`, plus the CA, under `dir`.
fn files(dir: &Path, ca: &Ca, name: &str) -> Result<ClusterTlsConfig> {
    let key = KeyPair::generate()?;
    let cert =
        CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &ca.cert, &ca.key)?;
    let (c, k, a) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}-ca.crt")),
    );
    std::fs::write(&c, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    std::fs::write(&a, ca.cert.pem())?;
    Ok(ClusterTlsConfig {
        enabled: true,
        cert: Some(c),
        key: Some(k),
        ca: Some(a),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_links_trusted_nodes_and_refuses_others() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (good, other) = (ca()?, ca()?);
    let mut h = Harness::new();
    for (name, ca) in [("a", &good), ("b", &good), ("evil", &other)] {
        let tls = files(dir.path(), ca, name)?;
        h.per_node.insert(
            name.into(),
            Settings {
                tls: Some(tls),
                ..Settings::default()
            },
        );
    }
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let before = h.node("a").cluster.connect_failures();
    h.step(Step::Add("evil")).await?;
    let (a, e) = (&h.node("a").cluster, &h.node("evil").cluster);
    within(
        "both sides refuse the untrusted certificate",
        DEADLINE,
        || a.connect_failures() > before && e.connect_failures() >= 1,
    )
    .await?;
    assert!(!a.is_up("evil") && !e.is_up("a") && !e.is_up("b"));
    assert!(h.node("a").cluster.is_up("b"), "trusted link unaffected");
    Ok(())
}

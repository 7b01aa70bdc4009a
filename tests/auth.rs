//! Authentication (password file, anonymous access, certificates aside) and
//! authorization (ACL file) against the real server, for 3.1.1 and 5.0.

mod common;

use common::raw::{Connect, Publish, Raw, Will};
use common::*;
use std::path::Path;
use std::time::Duration;
use tern_broker::auth::password::PasswordFile;

const ACL: &str = "\
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic readwrite public/#

user bob
topic write alice/inbox
topic read bob/#

pattern readwrite devices/%c/#
pattern read inbox/%u
";

struct Files {
    _dir: tempfile::TempDir,
    passwords: std::path::PathBuf,
    acl: std::path::PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pf = PasswordFile::default();
    pf.set("alice", "wonderland").expect("hash");
    pf.set("bob", "builder").expect("hash");
    let passwords = dir.path().join("passwd");
    pf.save(&passwords).expect("save passwords");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).expect("write acl");
    Files {
        _dir: dir,
        passwords,
        acl,
    }
}

async fn server(f: &Files, anonymous: bool) -> TestServer {
    let (p, a) = (f.passwords.clone(), f.acl.clone());
    start_with(move |c| {
        c.auth.allow_anonymous = anonymous;
        c.auth.password_file = Some(p);
        c.auth.acl_file = Some(a);
    })
    .await
}

async fn user(addr: std::net::SocketAddr, v5: bool, user: &str, pass: &str) -> Raw {
    let id = uid(user);
    let c = if v5 {
        Connect::v5(&id)
    } else {
        Connect::v4(&id)
    };
    Raw::connect_ok(addr, login(c, user, pass)).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_checked_and_failures_counted() {
    let f = files();
    let s = server(&f, false).await;
    for v5 in [false, true] {
        let base = |id: &str| if v5 { Connect::v5(id) } else { Connect::v4(id) };
        let (_, ack) = Raw::connect(s.addr, login(base(&uid("a")), "alice", "wonderland")).await;
        assert_eq!(ack.code, 0, "right password");
        let (_, ack) = Raw::connect(s.addr, login(base(&uid("a")), "alice", "nope")).await;
        assert_eq!(ack.code, if v5 { 0x86 } else { 4 }, "wrong password");
        let (_, ack) = Raw::connect(s.addr, login(base(&uid("c")), "carol", "x")).await;
        assert_eq!(ack.code, if v5 { 0x86 } else { 4 }, "unknown user");
        let (_, ack) = Raw::connect(s.addr, base(&uid("anon"))).await;
        assert_eq!(ack.code, if v5 { 0x87 } else { 5 }, "anonymous refused");
    }
    assert_eq!(scrape(s.admin(), "tern_auth_failures_total").await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_follow_the_anonymous_rules() {
    let f = files();
    let s = server(&f, true).await;
    let mut anon = Raw::v4(s.addr, &uid("anon")).await;
    let codes = anon
        .subscribe_with(
            &[("public/#", 1), ("alice/#", 1)],
            common::raw::Props::new(),
        )
        .await;
    assert_eq!(codes, vec![1, 0x80], "3.1.1 refusal is 0x80");
    let mut alice = user(s.addr, true, "alice", "wonderland").await;
    alice.publish("public/news", b"hello", 1).await;
    let got = anon.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("public/news", &b"hello"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_refused_per_version() {
    let f = files();
    let s = server(&f, false).await;
    let mut watcher = user(s.addr, true, "alice", "wonderland").await;
    watcher.subscribe("alice/#", 1).await;
    // bob may write alice/inbox only.
    let mut bob5 = user(s.addr, true, "bob", "builder").await;
    assert_eq!(
        bob5.publish_msg(Publish::new("alice/other", b"x").qos(1))
            .await,
        0x87,
        "5.0 PUBACK says not authorized"
    );
    assert_eq!(
        bob5.publish_msg(Publish::new("alice/inbox", b"ok5").qos(1))
            .await,
        0
    );
    let mut bob4 = user(s.addr, false, "bob", "builder").await;
    // 3.1.1: acknowledged and silently dropped.
    assert_eq!(
        bob4.publish_msg(Publish::new("alice/other", b"dropped").qos(1))
            .await,
        0
    );
    assert_eq!(
        bob4.publish_msg(Publish::new("alice/inbox", b"ok4").qos(1))
            .await,
        0
    );
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let p = watcher.next_publish().await;
        assert_ne!(
            p.payload, b"dropped",
            "a refused publish must not be delivered"
        );
        assert_ne!(p.topic, "alice/other");
        seen.push(p.payload);
    }
    assert_eq!(seen, vec![b"ok5".to_vec(), b"ok4".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refusals_and_denied_topics() {
    let f = files();
    let s = server(&f, false).await;
    let mut a5 = user(s.addr, true, "alice", "wonderland").await;
    let codes = a5
        .subscribe_with(
            &[("alice/#", 1), ("bob/#", 1), ("alice/secret", 1)],
            common::raw::Props::new(),
        )
        .await;
    assert_eq!(
        codes,
        vec![1, 0x87, 0x87],
        "5.0 refusal is 0x87; a wholly denied filter is refused"
    );
    // A denied topic inside an allowed filter is filtered at delivery.
    let mut a4 = user(s.addr, false, "alice", "wonderland").await;
    a4.publish("alice/secret", b"hidden", 1).await;
    a4.publish("alice/open", b"shown", 1).await;
    let got = a5.next_publish().await;
    assert_eq!(got.payload, b"shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_use_client_id_and_user_name() {
    let f = files();
    let s = server(&f, false).await;
    let id = uid("dev");
    let mut dev = Raw::connect_ok(s.addr, login(Connect::v5(&id), "bob", "builder"))
        .await
        .0;
    let codes = dev
        .subscribe_with(
            &[
                (&format!("devices/{id}/#"), 1),
                ("devices/other/#", 1),
                ("inbox/bob", 1),
                ("inbox/alice", 1),
            ],
            common::raw::Props::new(),
        )
        .await;
    assert_eq!(codes, vec![1, 0x87, 1, 0x87]);
    assert_eq!(
        dev.publish_msg(Publish::new(&format!("devices/{id}/t"), b"x").qos(1))
            .await,
        0,
        "allowed (and delivered to itself)"
    );
    assert_eq!(
        dev.publish_msg(Publish::new("devices/other/t", b"x").qos(1))
            .await,
        0x87
    );
}

/// A server whose ACL grants each client its own address's subtree.
async fn address_acl(proxy: bool) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "pattern readwrite sites/%a/#\n").expect("write acl");
    let s = start_with(move |c| {
        c.auth.acl_file = Some(acl);
        c.listeners.tcp.proxy_protocol = proxy;
    })
    .await;
    (s, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_pattern_matches_the_socket_peer() {
    let (s, _dir) = address_acl(false).await;
    for v5 in [true, false] {
        let id = uid("site");
        let c = if v5 {
            Connect::v5(&id)
        } else {
            Connect::v4(&id)
        };
        let mut c = Raw::connect_ok(s.addr, c).await.0;
        let refused = if v5 { 0x87 } else { 0x80 };
        let codes = c
            .subscribe_with(
                &[("sites/127.0.0.1/#", 1), ("sites/192.0.2.1/#", 1)],
                common::raw::Props::new(),
            )
            .await;
        assert_eq!(codes, vec![1, refused], "only its own address");
        let other = c
            .publish_msg(Publish::new("sites/192.0.2.1/t", b"no").qos(1))
            .await;
        assert_eq!(other, if v5 { 0x87 } else { 0 }, "another address");
        c.publish("sites/127.0.0.1/t", b"mine", 1).await;
        assert_eq!(c.next_publish().await.payload, b"mine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_pattern_matches_the_proxy_protocol_source() {
    let (s, _dir) = address_acl(true).await;
    let forwarded = "198.51.100.9:5555".parse().expect("addr");
    let mut c = Raw::tcp(s.addr).await;
    c.send(&proxy_v2_header(forwarded)).await;
    assert_eq!(c.handshake(Connect::v5(&uid("pp"))).await.code, 0);
    let codes = c
        .subscribe_with(
            &[("sites/198.51.100.9/#", 1), ("sites/127.0.0.1/#", 1)],
            common::raw::Props::new(),
        )
        .await;
    assert_eq!(
        codes,
        vec![1, 0x87],
        "the forwarded address counts, not the proxy's (the socket peer)"
    );
    assert_eq!(
        c.publish_msg(Publish::new("sites/127.0.0.1/t", b"x").qos(1))
            .await,
        0x87
    );
    c.publish("sites/198.51.100.9/t", b"via-proxy", 1).await;
    assert_eq!(c.next_publish().await.payload, b"via-proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_obey_read_rules() {
    let f = files();
    let s = server(&f, true).await;
    let mut alice = user(s.addr, true, "alice", "wonderland").await;
    alice.publish_retained("alice/r", b"alice-only", 1).await;
    alice.publish_retained("public/r", b"for-all", 1).await;
    // Anonymous may read public/# only: subscribing to `#` is refused outright,
    // and public/# brings the public retained message alone.
    let mut anon = Raw::v5(s.addr, &uid("anon")).await;
    let codes = anon
        .subscribe_with(&[("#", 1), ("public/#", 1)], common::raw::Props::new())
        .await;
    assert_eq!(codes, vec![0x87, 1]);
    let got = anon.next_publish().await;
    assert_eq!(
        (got.payload.as_slice(), got.retain),
        (&b"for-all"[..], true)
    );
    assert!(anon
        .next_publish_within(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_topic_must_be_writable() {
    let f = files();
    let s = server(&f, false).await;
    let bad = login(Connect::v5(&uid("w")), "bob", "builder").will(Will::new("bob/will", b"x"));
    let (_, ack) = Raw::connect(s.addr, bad).await;
    assert_eq!(ack.code, 0x87, "bob may not write bob/will");
    let bad4 = login(Connect::v4(&uid("w")), "bob", "builder").will(Will::new("bob/will", b"x"));
    assert_eq!(Raw::connect(s.addr, bad4).await.1.code, 5);
    let mut watcher = user(s.addr, true, "alice", "wonderland").await;
    watcher.subscribe("alice/#", 1).await;
    let ok = login(Connect::v4(&uid("w")), "bob", "builder")
        .will(Will::new("alice/inbox", b"bob-died").qos(1));
    let (c, ack) = Raw::connect(s.addr, ok).await;
    assert_eq!(ack.code, 0);
    c.drop_socket().await;
    assert_eq!(watcher.next_publish().await.payload, b"bob-died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_reloaded_when_they_change() {
    let f = files();
    let s = server(&f, false).await;
    assert_eq!(
        Raw::connect(s.addr, login(Connect::v5(&uid("d")), "dave", "pw"))
            .await
            .1
            .code,
        0x86
    );
    let mut pf = PasswordFile::load(&f.passwords, false).expect("load");
    pf.set("dave", "pw").expect("hash");
    pf.save(&f.passwords).expect("save");
    std::fs::write(
        &f.acl,
        format!("{ACL}\nuser dave\ntopic readwrite dave/#\n"),
    )
    .expect("acl");
    bump_mtime(&f.passwords);
    bump_mtime(&f.acl);
    wait_until(
        Duration::from_secs(10),
        "dave can log in and subscribe",
        || async {
            let (mut c, ack) =
                Raw::connect(s.addr, login(Connect::v5(&uid("d")), "dave", "pw")).await;
            ack.code == 0
                && c.subscribe_with(&[("dave/x", 0)], common::raw::Props::new())
                    .await
                    == vec![0]
        },
    )
    .await;
}

/// Makes sure a rewrite within the same second still looks changed.
fn bump_mtime(p: &Path) {
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    if let Ok(file) = std::fs::File::options().write(true).open(p) {
        let _ = file.set_modified(later);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_passwd_manages_the_file_the_broker_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwd");
    let tern = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("passwd")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tern passwd")
    };
    let f = file.to_str().expect("utf-8 path");
    assert!(tern(&["-c", "-b", f, "erin", "pw1"]).status.success());
    assert!(tern(&["-b", f, "frank", "pw2"]).status.success());
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.contains("erin:$argon2id$") && !text.contains("pw1"),
        "{text}"
    );
    let out = tern(&["-D", f, "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    assert!(tern(&["-D", f, "frank"]).status.success());

    let p = file.clone();
    let s = start_with(move |c| {
        c.auth.allow_anonymous = false;
        c.auth.password_file = Some(p);
    })
    .await;
    let ok = login(Connect::v4(&uid("e")), "erin", "pw1");
    assert_eq!(Raw::connect(s.addr, ok).await.1.code, 0);
    let gone = login(Connect::v4(&uid("f")), "frank", "pw2");
    assert_eq!(Raw::connect(s.addr, gone).await.1.code, 4, "deleted user");
}

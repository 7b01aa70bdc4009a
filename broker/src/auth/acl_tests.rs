//! ACL evaluation and password files.

use super::acl::{covers, Acl};
use super::password::PasswordFile;
use super::Client;

const ACL: &str = "\
# anonymous clients
topic read public/#
topic write public/in

user alice
topic readwrite alice/#
topic deny alice/secret
topic read shared/+/news

user bob
topic write bob/out

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

/// A client at 192.0.2.1.
fn cl<'a>(client_id: &'a str, username: Option<&'a str>) -> Client<'a> {
    Client {
        client_id,
        username,
        addr: [192, 0, 2, 1].into(),
    }
}

fn acl() -> Acl {
    Acl::parse(ACL).expect("valid ACL")
}

#[test]
fn anonymous_rules_apply_to_clients_without_a_user() {
    let a = acl();
    assert!(a.can_read(&cl("c", None), "public/x"));
    assert!(!a.can_publish(&cl("c", None), "public/x"), "read only");
    assert!(a.can_publish(&cl("c", None), "public/in"));
    assert!(
        !a.can_read(&cl("c", Some("alice")), "public/x"),
        "alice has her own rules"
    );
}

#[test]
fn user_rules_and_deny() {
    let a = acl();
    assert!(a.can_publish(&cl("c", Some("alice")), "alice/a/b"));
    assert!(a.can_read(&cl("c", Some("alice")), "alice/a"));
    assert!(
        !a.can_publish(&cl("c", Some("alice")), "alice/secret"),
        "deny wins"
    );
    assert!(!a.can_publish(&cl("c", Some("bob")), "alice/a"));
    assert!(a.can_publish(&cl("c", Some("bob")), "bob/out"));
    assert!(!a.can_read(&cl("c", Some("bob")), "bob/out"), "write only");
    assert!(
        !a.can_publish(&cl("c", Some("mallory")), "public/in"),
        "unknown users get no anonymous rules"
    );
}

#[test]
fn patterns_substitute_client_id_and_user() {
    let a = acl();
    assert!(a.can_publish(&cl("dev1", None), "devices/dev1/temp"));
    assert!(!a.can_publish(&cl("dev1", None), "devices/dev2/temp"));
    assert!(a.can_read(&cl("x", Some("bob")), "users/bob/inbox"));
    assert!(
        !a.can_read(&cl("x", None), "users/bob/inbox"),
        "%u never matches an anonymous client"
    );
    assert!(
        !a.can_publish(&cl("+", None), "devices/+/x"),
        "a wildcard id fills no pattern"
    );
}

#[test]
fn address_pattern_substitutes_the_client_address() {
    let a = Acl::parse("pattern read sites/%a/#\npattern write up/%a/%c\n").expect("valid");
    let at = |addr: std::net::IpAddr| Client {
        client_id: "d1",
        username: Some("u"),
        addr,
    };
    let v4 = at([192, 0, 2, 1].into());
    assert!(a.can_read(&v4, "sites/192.0.2.1/temp"));
    assert!(a.can_subscribe(&v4, "sites/192.0.2.1/#"));
    assert!(!a.can_read(&v4, "sites/192.0.2.2/temp"), "another address");
    assert!(
        !a.can_subscribe(&v4, "sites/+/temp"),
        "wider than the address"
    );
    assert!(a.can_publish(&v4, "up/192.0.2.1/d1"));
    assert!(!a.can_publish(&v4, "up/192.0.2.1/d2"), "%c still applies");
    let mapped = at("::ffff:192.0.2.1".parse().expect("ip"));
    assert!(
        a.can_read(&mapped, "sites/192.0.2.1/temp"),
        "an IPv4-mapped peer is its IPv4 address"
    );
    let v6 = at("2001:db8::7".parse().expect("ip"));
    assert!(a.can_read(&v6, "sites/2001:db8::7/x"));
    assert!(!a.can_read(&v6, "sites/192.0.2.1/x"));
}

#[test]
fn subscriptions_must_be_covered_by_read_rules() {
    let a = acl();
    assert!(a.can_subscribe(&cl("c", Some("alice")), "alice/#"));
    assert!(a.can_subscribe(&cl("c", Some("alice")), "shared/+/news"));
    assert!(a.can_subscribe(&cl("c", Some("alice")), "shared/x/news"));
    assert!(
        !a.can_subscribe(&cl("c", Some("alice")), "shared/#"),
        "wider than the rule"
    );
    assert!(
        !a.can_subscribe(&cl("c", Some("alice")), "alice/secret"),
        "wholly denied"
    );
    assert!(
        a.can_subscribe(&cl("c", Some("alice")), "alice/+"),
        "allowed; the denied topic is filtered at delivery"
    );
    assert!(!a.can_read(&cl("c", Some("alice")), "alice/secret"));
    assert!(
        a.can_subscribe(&cl("d1", None), "$share/g/devices/d1/#"),
        "shared prefix ignored"
    );
    assert!(
        !a.can_subscribe(&cl("c", Some("bob")), "bob/out"),
        "write-only"
    );
}

#[test]
fn coverage_of_filters() {
    assert!(covers("a/#", "a/b/+"));
    assert!(covers("a/#", "a"));
    assert!(covers("+/b", "x/b"));
    assert!(covers("+/b", "+/b"));
    assert!(!covers("+/b", "#"));
    assert!(!covers("a/+", "a/#"));
    assert!(!covers("a/b", "a/+"));
}

#[test]
fn bad_acl_lines_are_named() {
    let e = Acl::parse("topic read a\nuser\n").expect_err("user without name");
    assert_eq!(e.line, 2);
    let e = Acl::parse("topic sometimes a/b\n").expect_err("bad access");
    assert_eq!(e.line, 1);
    let e = Acl::parse("topic read a/#/b\n").expect_err("bad filter");
    assert!(e.to_string().contains("invalid topic filter"));
    let e = Acl::parse("allow all\n").expect_err("unknown keyword");
    assert!(e.to_string().contains("allow"));
}

#[test]
fn password_file_round_trip_and_verify() {
    let mut f = PasswordFile::default();
    f.set("alice", "s3cret").expect("hash");
    f.set("bob", "hunter2").expect("hash");
    let text = f.to_text();
    assert!(
        text.contains("alice:$argon2id$"),
        "salted argon2id hashes: {text}"
    );
    assert!(!text.contains("s3cret"));
    let g = PasswordFile::parse(&text).expect("parses back");
    assert!(g.verify("alice", b"s3cret"));
    assert!(!g.verify("alice", b"hunter2"));
    assert!(!g.verify("carol", b"s3cret"));
    let mut h = g.clone();
    assert!(h.remove("bob"));
    assert_eq!(h.len(), 1);
    // The same password twice gives different hashes (salted).
    let mut twice = PasswordFile::default();
    twice.set("a", "x").expect("hash");
    let first = twice.to_text();
    twice.set("a", "x").expect("hash");
    assert_ne!(first, twice.to_text());
}

#[test]
fn bad_password_lines_are_named() {
    assert!(matches!(
        PasswordFile::parse("# comment\nalice\n"),
        Err(super::password::PasswordError::Syntax { line: 2, .. })
    ));
    assert!(matches!(
        PasswordFile::parse("alice:plaintext\n"),
        Err(super::password::PasswordError::Syntax { line: 1, .. })
    ));
}

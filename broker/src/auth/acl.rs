//! Authorization by an ACL file in the Mosquitto / VerneMQ syntax:
//!
//! ```text
//! # lines before any `user` line apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! pattern readwrite devices/%c/#      # for every client; %c client id, %u user name
//! pattern read sites/%a/#             # %a the client's IP address (a Tern extension)
//! ```
//!
//! `%a` is the address the client connected from: the source a PROXY
//! protocol header names when the listener expects one, else the socket's
//! peer; IPv4 in dotted form (also for IPv4-mapped IPv6 peers), IPv6 in its
//! compressed form (`2001:db8::1`).
//!
//! Access is granted when some rule for the client allows it and no
//! `deny` rule for the client matches. A subscription is allowed when a
//! read rule covers every topic its filter can match (so `a/#` is refused
//! under a rule for `a/b/#` only) and no deny rule covers all of them;
//! denied topics inside an allowed filter are filtered at delivery.

use super::Client;
use crate::topic;
use std::collections::HashMap;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        match s {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn grants(self, write: bool) -> bool {
        match self {
            Access::ReadWrite => true,
            Access::Read => !write,
            Access::Write => write,
            Access::Deny => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// A line of the ACL file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct AclError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

impl Acl {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |why: &str| AclError {
                line: i + 1,
                why: why.to_owned(),
            };
            // `#` is also a wildcard, so (as in Mosquitto) only whole lines
            // starting with it are comments.
            if raw.trim_start().starts_with('#') {
                continue;
            }
            let mut words = raw.split_whitespace();
            let Some(kind) = words.next() else { continue };
            match kind {
                "user" => {
                    let name = words.collect::<Vec<_>>().join(" ");
                    if name.is_empty() {
                        return Err(err("`user` needs a name"));
                    }
                    user = Some(name);
                }
                "topic" | "pattern" => {
                    let rest: Vec<&str> = words.collect();
                    let (access, filter) = match rest.as_slice() {
                        [f] => (Access::ReadWrite, *f),
                        [a, f] => (
                            Access::parse(a).ok_or_else(|| {
                                err("access must be read, write, readwrite or deny")
                            })?,
                            *f,
                        ),
                        _ => {
                            return Err(err("expected `topic [read|write|readwrite|deny] <topic>`"))
                        }
                    };
                    let probe = filter
                        .replace("%c", "c")
                        .replace("%u", "u")
                        .replace("%a", "a");
                    if !topic::valid_topic_filter(&probe) {
                        return Err(err("invalid topic filter"));
                    }
                    let rule = Rule {
                        access,
                        filter: filter.to_owned(),
                    };
                    match (kind, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(u)) => acl.users.entry(u.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                other => return Err(err(&format!("unknown keyword `{other}`"))),
            }
        }
        Ok(acl)
    }

    /// The rules that apply to a client, with `%c`/`%u`/`%a` substituted.
    /// A pattern naming `%u` does not apply to an anonymous client, and an
    /// id or name containing a wildcard never fills a pattern.
    fn rules_for(&self, client: &Client<'_>) -> Vec<Rule> {
        let (client_id, username) = (client.client_id, client.username);
        let own = match username {
            Some(u) => self.users.get(u).cloned().unwrap_or_default(),
            None => self.anonymous.clone(),
        };
        let safe = |s: &str| !s.contains(['+', '#', '/']);
        let patterns = self.patterns.iter().filter_map(|r| {
            if r.filter.contains("%c") && !safe(client_id) {
                return None;
            }
            let mut filter = r.filter.replace("%c", client_id);
            if filter.contains("%a") {
                filter = filter.replace("%a", &client.addr.to_canonical().to_string());
            }
            let filter = match (filter.contains("%u"), username) {
                (false, _) => filter,
                (true, Some(u)) if safe(u) => filter.replace("%u", u),
                (true, _) => return None,
            };
            Some(Rule {
                access: r.access,
                filter,
            })
        });
        own.into_iter().chain(patterns).collect()
    }

    /// May this client publish to `topic`?
    pub fn can_publish(&self, client: &Client<'_>, topic_name: &str) -> bool {
        self.check(client, true, |f| topic::matches(f, topic_name))
    }

    /// May this client receive messages published to `topic`?
    pub fn can_read(&self, client: &Client<'_>, topic_name: &str) -> bool {
        self.check(client, false, |f| topic::matches(f, topic_name))
    }

    /// May this client subscribe to `filter` (a `$share/g/` prefix is ignored)?
    pub fn can_subscribe(&self, client: &Client<'_>, filter: &str) -> bool {
        let filter = topic::parse_shared(filter).map_or(filter, |(_, f)| f);
        let rules = self.rules_for(client);
        let denied = rules
            .iter()
            .any(|r| r.access == Access::Deny && covers(&r.filter, filter));
        !denied
            && rules
                .iter()
                .any(|r| r.access.grants(false) && covers(&r.filter, filter))
    }

    fn check(&self, client: &Client<'_>, write: bool, matches: impl Fn(&str) -> bool) -> bool {
        let rules = self.rules_for(client);
        let denied = rules
            .iter()
            .any(|r| r.access == Access::Deny && matches(&r.filter));
        !denied
            && rules
                .iter()
                .any(|r| r.access.grants(write) && matches(&r.filter))
    }
}

/// True if every topic `sub` can match is matched by `acl` (both valid plain filters).
pub fn covers(acl: &str, sub: &str) -> bool {
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(al), Some(sl)) if al == sl && al != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

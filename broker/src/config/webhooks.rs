//! `[[auth.webhooks]]`: HTTP endpoints asked about CONNECT, PUBLISH and
//! SUBSCRIBE before the password and ACL files, in the manner of VerneMQ's
//! `vmq_webhooks`.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// The commented documentation of the webhook keys in the default config.
pub(super) const WEBHOOKS_DOC: &str = "# [[auth.webhooks]]: HTTP endpoints asked before the password / ACL files\n\
                      #   (none by default). Each entry: hook = \"auth_on_register\" |\n\
                      #   \"auth_on_publish\" | \"auth_on_subscribe\"; endpoint = \"http(s)://host:port/path\";\n\
                      #   timeout_ms; cache_ttl_s (0: cache only when the endpoint sends\n\
                      #   cache-control: max-age); fail_open (false: a timeout, connection error or\n\
                      #   non-200 answer denies; true: it counts as \"next\"). Several entries for\n\
                      #   one hook are asked in order. From the environment:\n\
                      #   TERN_AUTH__WEBHOOKS=auth_on_register=http://auth:8080/reg,auth_on_publish=...\n\
                      # auth.webhook_cache_max_entries: cached decisions per hook at most.\n\n";

/// Which decision a webhook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// CONNECT: may this client connect with these credentials?
    AuthOnRegister,
    /// PUBLISH (and a will at CONNECT): may this client publish this message?
    AuthOnPublish,
    /// SUBSCRIBE: may this client subscribe to these filters?
    AuthOnSubscribe,
}

impl HookKind {
    /// The name VerneMQ gives the hook (sent in the `vernemq-hook` header).
    pub fn name(self) -> &'static str {
        match self {
            HookKind::AuthOnRegister => "auth_on_register",
            HookKind::AuthOnPublish => "auth_on_publish",
            HookKind::AuthOnSubscribe => "auth_on_subscribe",
        }
    }

    fn parse(s: &str) -> Option<HookKind> {
        [
            HookKind::AuthOnRegister,
            HookKind::AuthOnPublish,
            HookKind::AuthOnSubscribe,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// One webhook: an endpoint asked about one hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The hook this endpoint answers.
    pub hook: HookKind,
    /// `http://` or `https://` URL the request is POSTed to.
    pub endpoint: String,
    /// A call not answered within this many milliseconds has failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds a decision is cached (0: only as long as the endpoint's
    /// `cache-control: max-age` says).
    #[serde(default)]
    pub cache_ttl_s: u64,
    /// A failed call (timeout, connection error, non-200, bad JSON) counts
    /// as `next` instead of a denial.
    #[serde(default)]
    pub fail_open: bool,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// Longest accepted `timeout_ms`: a client waits this long at most.
const MAX_TIMEOUT_MS: u64 = 60_000;

impl WebhookConfig {
    /// A webhook with the default timeout, no cache, fail closed.
    pub fn new(hook: HookKind, endpoint: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            hook,
            endpoint: endpoint.into(),
            timeout_ms: default_timeout_ms(),
            cache_ttl_s: 0,
            fail_open: false,
        }
    }
}

/// Checks every webhook and the cache bound.
pub(super) fn validate(hooks: &[WebhookConfig], cache_max: usize) -> Result<(), ConfigError> {
    let invalid = |message: String| {
        Err(ConfigError::Invalid {
            key: "auth.webhooks",
            message,
        })
    };
    for (i, h) in hooks.iter().enumerate() {
        if let Err(why) = check_endpoint(&h.endpoint) {
            return invalid(format!("entry {i}: endpoint {:?}: {why}", h.endpoint));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&h.timeout_ms) {
            return invalid(format!(
                "entry {i}: timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                h.timeout_ms
            ));
        }
    }
    if cache_max == 0 {
        return Err(ConfigError::Invalid {
            key: "auth.webhook_cache_max_entries",
            message: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// An absolute `http` or `https` URL with a host.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the scheme must be http or https".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

/// `webhooks` as a TOML array of tables, or from the environment as
/// `hook=endpoint` pairs separated by commas (other keys at their defaults).
/// A visitor rather than an untagged enum, so that an entry's own error
/// (an unknown key, say) reaches the user.
pub(super) fn webhooks_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<WebhookConfig>, D::Error> {
    struct Hooks;
    impl<'de> serde::de::Visitor<'de> for Hooks {
        type Value = Vec<WebhookConfig>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of webhook tables or a \"hook=endpoint,…\" string")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(h) = seq.next_element()? {
                out.push(h);
            }
            Ok(out)
        }

        fn visit_str<E: serde::de::Error>(self, joined: &str) -> Result<Self::Value, E> {
            joined
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (hook, endpoint) = pair
                        .split_once('=')
                        .ok_or_else(|| E::custom(format!("{pair:?} is not hook=endpoint")))?;
                    let hook = HookKind::parse(hook.trim()).ok_or_else(|| {
                        E::custom(format!(
                            "unknown hook {hook:?} (auth_on_register, auth_on_publish, auth_on_subscribe)"
                        ))
                    })?;
                    Ok(WebhookConfig::new(hook, endpoint.trim()))
                })
                .collect()
        }
    }
    d.deserialize_any(Hooks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    #[test]
    fn tables_and_env_string_both_parse() {
        let cfg = Config::from_toml_str(
            "[auth]\n[[auth.webhooks]]\nhook = \"auth_on_publish\"\nendpoint = \"https://a/b\"\ntimeout_ms = 200\ncache_ttl_s = 5\nfail_open = true\n",
        )
        .expect("parses");
        assert_eq!(
            cfg.auth.webhooks,
            vec![WebhookConfig {
                hook: HookKind::AuthOnPublish,
                endpoint: "https://a/b".into(),
                timeout_ms: 200,
                cache_ttl_s: 5,
                fail_open: true,
            }]
        );
        let env: HashMap<String, String> = [(
            "TERN_AUTH__WEBHOOKS".to_string(),
            "auth_on_register=http://h:1/r, auth_on_subscribe=http://h:1/s".to_string(),
        )]
        .into();
        let cfg = Config::load(None, &env).expect("loads");
        assert_eq!(
            cfg.auth.webhooks,
            vec![
                WebhookConfig::new(HookKind::AuthOnRegister, "http://h:1/r"),
                WebhookConfig::new(HookKind::AuthOnSubscribe, "http://h:1/s"),
            ]
        );
    }

    #[test]
    fn bad_entries_name_the_key() {
        let bad = |toml: &str| Config::from_toml_str(toml).map(|c| c.validate());
        let e = bad("[[auth.webhooks]]\nhook = \"auth_on_lunch\"\nendpoint = \"http://a\"\n")
            .expect_err("unknown hook");
        assert!(e.to_string().contains("auth.webhooks"), "{e}");
        let e = bad(
            "[[auth.webhooks]]\nhook = \"auth_on_publish\"\nendpoint = \"http://a\"\nretries = 3\n",
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("retries"), "{e}");
        for endpoint in ["ftp://a/b", "/just/a/path", "http://"] {
            let r = bad(&format!(
                "[[auth.webhooks]]\nhook = \"auth_on_publish\"\nendpoint = \"{endpoint}\"\n"
            ))
            .expect("parses");
            let e = r.expect_err(endpoint).to_string();
            assert!(e.contains("auth.webhooks") && e.contains("endpoint"), "{e}");
        }
        let r = bad("[[auth.webhooks]]\nhook = \"auth_on_publish\"\nendpoint = \"http://a\"\ntimeout_ms = 0\n")
            .expect("parses");
        assert!(r
            .expect_err("zero timeout")
            .to_string()
            .contains("timeout_ms"));
        let env: HashMap<String, String> = [(
            "TERN_AUTH__WEBHOOKS".to_string(),
            "auth_on_x=http://a".to_string(),
        )]
        .into();
        let e = Config::load(None, &env).expect_err("unknown hook in env");
        assert!(e.to_string().contains("TERN_AUTH__WEBHOOKS"), "{e}");
    }
}

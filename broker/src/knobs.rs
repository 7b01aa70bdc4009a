//! Runtime knobs: the settings `POST /api/v1/set` may change while the
//! node runs. The configuration stays an immutable `Arc<Config>`; the few
//! values read on hot paths that can change safely live here as atomics,
//! seeded from the configuration at start.
//!
//! [`parse`] checks a whole request before anything is applied, so a bad
//! key or value changes nothing.

use crate::config::Config;
use std::sync::atomic::{AtomicU64, Ordering};

/// One knob: its key and what it accepts.
struct Spec {
    key: &'static str,
    /// Smallest accepted value.
    min: u64,
    /// Largest accepted value.
    max: u64,
    doc: &'static str,
}

const SPECS: [Spec; 9] = [
    Spec {
        key: "mqtt.max_inflight",
        min: 1,
        max: u16::MAX as u64,
        doc: "QoS 1/2 messages in flight towards one client (new connections)",
    },
    Spec {
        key: "mqtt.max_online_messages",
        min: 0,
        max: u32::MAX as u64,
        doc: "messages queued for an online session",
    },
    Spec {
        key: "mqtt.max_offline_messages",
        min: 0,
        max: u32::MAX as u64,
        doc: "messages queued for an offline session",
    },
    Spec {
        key: "limits.qos_queue_headroom",
        min: 0,
        max: u32::MAX as u64,
        doc: "QoS 1/2 kept beyond a full online queue while publishers slow down",
    },
    Spec {
        key: "limits.max_topic_levels",
        min: 0,
        max: u16::MAX as u64,
        doc: "levels in a topic name or filter (0: no cap)",
    },
    Spec {
        key: "limits.max_subscriptions_per_client",
        min: 0,
        max: u32::MAX as u64,
        doc: "subscriptions one session may hold (0: no cap)",
    },
    Spec {
        key: "limits.backpressure_max_wait_ms",
        min: 0,
        max: 3_600_000,
        doc: "longest a publisher is slowed for a full target",
    },
    Spec {
        key: "limits.slow_consumer_timeout_secs",
        min: 1,
        max: 86_400,
        doc: "a subscriber making no progress this long is disconnected",
    },
    Spec {
        key: "limits.max_memory_mb",
        min: 0,
        max: u32::MAX as u64,
        doc: "resident memory above which new connections are refused (0: none)",
    },
];

/// A request to change one knob, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Setting {
    /// The knob's key, e.g. `mqtt.max_inflight`.
    pub key: String,
    /// The new value.
    pub value: u64,
}

/// A `set` request that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    /// Not a runtime knob.
    #[error("unknown key {0} (runtime keys: {list})", list = keys().join(", "))]
    UnknownKey(String),
    /// Not a number, or out of range.
    #[error("invalid value {value:?} for {key}: {why}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        why: String,
    },
    /// Nothing to set.
    #[error("no key=value given")]
    Empty,
}

/// Every runtime key with a line saying what it does.
pub fn describe() -> Vec<(&'static str, &'static str)> {
    SPECS.iter().map(|s| (s.key, s.doc)).collect()
}

/// The runtime keys.
pub fn keys() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.key).collect()
}

/// Checks `key=value` pairs; all or nothing.
pub fn parse<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Setting>, KnobError> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        let spec = SPECS
            .iter()
            .find(|s| s.key == key)
            .ok_or_else(|| KnobError::UnknownKey(key.to_string()))?;
        let invalid = || KnobError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            why: format!("an integer from {} to {}", spec.min, spec.max),
        };
        let v: u64 = value.trim().parse().map_err(|_| invalid())?;
        if !(spec.min..=spec.max).contains(&v) {
            return Err(invalid());
        }
        out.push(Setting {
            key: key.to_string(),
            value: v,
        });
    }
    if out.is_empty() {
        return Err(KnobError::Empty);
    }
    Ok(out)
}

/// The knobs' current values, read by the hot paths.
#[derive(Debug)]
pub struct Knobs {
    values: [AtomicU64; SPECS.len()],
}

macro_rules! getter {
    ($(#[$doc:meta] $name:ident: $ty:ty = $i:expr;)*) => {
        $(#[$doc] pub fn $name(&self) -> $ty {
            // In range by construction (`parse` checks against SPECS).
            <$ty>::try_from(self.values[$i].load(Ordering::Relaxed)).unwrap_or(<$ty>::MAX)
        })*
    };
}

impl Knobs {
    /// The values the configuration starts with.
    pub fn new(config: &Config) -> Knobs {
        let (m, l) = (&config.mqtt, &config.limits);
        let start = [
            u64::from(m.max_inflight),
            m.max_online_messages as u64,
            m.max_offline_messages as u64,
            l.qos_queue_headroom as u64,
            l.max_topic_levels as u64,
            l.max_subscriptions_per_client as u64,
            l.backpressure_max_wait_ms,
            l.slow_consumer_timeout_secs,
            l.max_memory_mb,
        ];
        Knobs {
            values: start.map(AtomicU64::new),
        }
    }

    /// Applies checked settings.
    pub fn apply(&self, settings: &[Setting]) {
        for s in settings {
            if let Some(i) = SPECS.iter().position(|spec| spec.key == s.key) {
                self.values[i].store(s.value, Ordering::Relaxed);
                tracing::info!(key = %s.key, value = s.value, "runtime setting changed");
            }
        }
    }

    /// Every knob and its current value, by key.
    pub fn show(&self) -> Vec<Setting> {
        SPECS
            .iter()
            .zip(&self.values)
            .map(|(s, v)| Setting {
                key: s.key.to_string(),
                value: v.load(Ordering::Relaxed),
            })
            .collect()
    }

    getter! {
        /// `mqtt.max_inflight`.
        max_inflight: u16 = 0;
        /// `mqtt.max_online_messages`.
        max_online_messages: usize = 1;
        /// `mqtt.max_offline_messages`.
        max_offline_messages: usize = 2;
        /// `limits.qos_queue_headroom`.
        qos_queue_headroom: usize = 3;
        /// `limits.max_topic_levels`.
        max_topic_levels: usize = 4;
        /// `limits.max_subscriptions_per_client`.
        max_subscriptions_per_client: usize = 5;
        /// `limits.backpressure_max_wait_ms`.
        backpressure_max_wait_ms: u64 = 6;
        /// `limits.slow_consumer_timeout_secs`.
        slow_consumer_timeout_secs: u64 = 7;
        /// `limits.max_memory_mb`.
        max_memory_mb: u64 = 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_from_config_and_applies_checked_settings() {
        let mut config = Config::default();
        config.mqtt.max_inflight = 7;
        config.limits.max_topic_levels = 9;
        let k = Knobs::new(&config);
        assert_eq!((k.max_inflight(), k.max_topic_levels()), (7, 9));
        let s =
            parse([("mqtt.max_inflight", "3"), ("limits.max_memory_mb", "512")]).expect("valid");
        k.apply(&s);
        assert_eq!((k.max_inflight(), k.max_memory_mb()), (3, 512));
        assert_eq!(k.show().len(), SPECS.len());
    }

    #[test]
    fn bad_requests_name_the_key_and_change_nothing() {
        let e = parse([("mqtt.max_inflight", "5"), ("mqtt.nope", "1")]).unwrap_err();
        assert!(e.to_string().contains("unknown key mqtt.nope"), "{e}");
        let e = parse([("mqtt.max_inflight", "0")]).unwrap_err();
        assert!(e.to_string().contains("mqtt.max_inflight"), "{e}");
        let e = parse([("limits.max_topic_levels", "x")]).unwrap_err();
        assert!(matches!(e, KnobError::InvalidValue { .. }), "{e}");
        assert_eq!(parse([]), Err(KnobError::Empty));
    }
}

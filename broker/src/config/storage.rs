//! `[storage]`: the data directory and how hard writes are pushed to disk.
//! With no `dir` (the default) nothing is written and the broker keeps
//! everything in memory, exactly as before durable state existed.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// When state written to the store is known to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// One `fdatasync` per `group_commit_ms` for everything written since;
    /// QoS 1/2 acks to publishers wait for it.
    #[default]
    Group,
    /// One `fdatasync` after every write, inline.
    Fsync,
    /// Written to the OS every `group_commit_ms`, never synced; acks do not wait.
    None,
}

/// The `[storage]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data directory; unset keeps all state in memory only.
    pub dir: Option<PathBuf>,
    /// Durability policy.
    pub durability: Durability,
    /// Group-commit interval, milliseconds (1..=1000).
    pub group_commit_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: None,
            durability: Durability::Group,
            group_commit_ms: 2,
        }
    }
}

impl StorageConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.group_commit_ms) {
            return Err(ConfigError::Invalid {
                key: "storage.group_commit_ms",
                message: format!("must be between 1 and 1000, got {}", self.group_commit_ms),
            });
        }
        Ok(())
    }
}

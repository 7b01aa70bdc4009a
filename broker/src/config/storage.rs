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
    /// Data directory; unset or empty keeps all state in memory only (an
    /// empty `TERN_STORAGE__DIR=` turns off an image's default).
    pub dir: Option<PathBuf>,
    /// Durability policy.
    pub durability: Durability,
    /// Group-commit interval, milliseconds (1..=1000).
    pub group_commit_ms: u64,
    /// With a `dir`: messages of one persistent session's queue kept in
    /// memory; the rest stay in the store only and are read back in
    /// batches as the queue drains. Without a `dir` it has no effect.
    pub max_in_memory_per_session: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: None,
            durability: Durability::Group,
            group_commit_ms: 2,
            max_in_memory_per_session: 1000,
        }
    }
}

impl StorageConfig {
    /// The data directory, if state is to be kept (set and non-empty).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref().filter(|d| !d.as_os_str().is_empty())
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.group_commit_ms) {
            return Err(ConfigError::Invalid {
                key: "storage.group_commit_ms",
                message: format!("must be between 1 and 1000, got {}", self.group_commit_ms),
            });
        }
        if self.max_in_memory_per_session == 0 {
            return Err(ConfigError::Invalid {
                key: "storage.max_in_memory_per_session",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

//! The password file: one `user:hash` line per user, hashes in the PHC
//! string format of argon2id (salted and slow), managed by `tern passwd`
//! in the manner of `vmq-passwd` and `mosquitto_passwd`.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::BTreeMap;
use std::path::Path;

/// Errors reading or writing a password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a valid hash.
    #[error("line {line}: {why}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Users and their password hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: BTreeMap<String, String>,
}

impl PasswordFile {
    /// Parses the file's text; `#` lines and blank lines are skipped.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordError> {
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |why| PasswordError::Syntax { line: i + 1, why };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| syntax("expected user:hash"))?;
            if user.is_empty() {
                return Err(syntax("empty user name"));
            }
            PasswordHash::new(hash)
                .map_err(|_| syntax("not a PHC password hash (make it with `tern passwd`)"))?;
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(PasswordFile { users })
    }

    /// Reads and parses `path`; a missing file is an empty one when `missing_ok`.
    pub fn load(path: &Path, missing_ok: bool) -> Result<PasswordFile, PasswordError> {
        match std::fs::read_to_string(path) {
            Ok(text) => PasswordFile::parse(&text),
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(PasswordFile::default())
            }
            Err(source) => Err(PasswordError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes the file (through a temporary file and a rename).
    pub fn save(&self, path: &Path) -> Result<(), PasswordError> {
        let io = |source| PasswordError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_text()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        self.users
            .iter()
            .map(|(u, h)| format!("{u}:{h}\n"))
            .collect()
    }

    /// Sets (or replaces) `user`'s password.
    pub fn set(&mut self, user: &str, password: &str) -> Result<(), PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        self.users.insert(user.to_owned(), hash.to_string());
        Ok(())
    }

    /// Removes `user`; true if it was there.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Checks `password` for `user`. Slow by design (argon2): call it off
    /// the async workers.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

//! `tern passwd`: manage a password file, in the manner of `mosquitto_passwd`.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use tern_broker::auth::password::PasswordFile;

/// What to do to the file.
pub struct Passwd<'a> {
    pub file: &'a Path,
    pub user: &'a str,
    /// Create (or overwrite) the file.
    pub create: bool,
    /// Delete the user.
    pub delete: bool,
    /// The password, in batch mode; otherwise it is prompted for.
    pub password: Option<&'a str>,
}

/// Reads a password twice from the terminal (without echo) or once per line
/// from a pipe.
fn prompt() -> Result<String, String> {
    if let Ok(first) = rpassword::prompt_password("Password: ") {
        let again = rpassword::prompt_password("Reenter password: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("passwords do not match".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn apply(p: &Passwd) -> Result<(), String> {
    if p.user.is_empty() || p.user.contains(':') {
        return Err("a user name must be non-empty and contain no ':'".into());
    }
    let mut file = if p.create {
        PasswordFile::default()
    } else {
        PasswordFile::load(p.file, false).map_err(|e| e.to_string())?
    };
    if p.delete {
        if !file.remove(p.user) {
            return Err(format!("user {} not in {}", p.user, p.file.display()));
        }
    } else {
        let password = match p.password {
            Some(pw) => pw.to_owned(),
            None => prompt()?,
        };
        if password.is_empty() {
            return Err("empty password".into());
        }
        file.set(p.user, &password).map_err(|e| e.to_string())?;
    }
    file.save(p.file).map_err(|e| e.to_string())
}

/// Runs the command; errors print one line and exit 1.
pub fn run(p: &Passwd) -> ExitCode {
    match apply(p) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern passwd: {e}");
            ExitCode::from(1)
        }
    }
}

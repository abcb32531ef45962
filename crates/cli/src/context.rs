//! `rnats context add|select|ls|show|rm`: named connection settings, stored as natscli stores
//! them so that both tools share them: one JSON file per context in
//! `$XDG_CONFIG_HOME/nats/context/NAME.json` (else `~/.config/nats/...`), the selected one's
//! name in `nats/context.txt`, with natscli's field names (`url`, `user`, `password`,
//! `token`, `creds`, `nkey`, `cert`, `key`, `ca`, `description`).
//!
//! A context fills the connection options a command was not given (`--context NAME` or
//! `NATS_CONTEXT`, else the selected one); flags and their environment variables win.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::{Failure, Result};

#[derive(Args, Debug)]
pub struct ContextArgs {
    #[command(subcommand)]
    command: ContextCommand,
}

#[derive(Subcommand, Debug)]
enum ContextCommand {
    /// Create or replace a context from the connection flags given with it
    #[command(alias = "create")]
    Add(AddArgs),
    /// Make a context the one used when none is named
    Select(NameArg),
    /// List the known contexts (the selected one marked with *)
    #[command(alias = "list")]
    Ls,
    /// Show a context's settings (the selected one by default; secrets hidden)
    #[command(alias = "info")]
    Show(OptName),
    /// Delete a context
    #[command(alias = "delete")]
    Rm(NameArg),
}

#[derive(Args, Debug)]
struct NameArg {
    /// Context name
    name: String,
}

#[derive(Args, Debug)]
struct OptName {
    /// Context name
    name: Option<String>,
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Context name (letters, digits, `-`, `_`, `.`)
    name: String,
    /// What the context is for
    #[arg(long)]
    description: Option<String>,
    /// Select it as well
    #[arg(long)]
    select: bool,
}

/// A stored context: natscli's JSON object (fields this tool does not use are kept).
#[derive(Debug, Clone, Default)]
pub struct Context {
    fields: Map<String, Value>,
}

impl Context {
    /// A non-empty string field.
    pub fn get(&self, key: &str) -> Option<String> {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// The configuration directory natscli uses.
fn nats_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("nats"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("nats")),
        None => Err("no HOME or XDG_CONFIG_HOME: cannot find where contexts are stored".into()),
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid context name {name:?}: use letters, digits, '-', '_' and '.' (not first)"
        )
        .into())
    }
}

fn file_of(dir: &Path, name: &str) -> PathBuf {
    dir.join("context").join(format!("{name}.json"))
}

fn selected_name(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("context.txt"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read(dir: &Path, name: &str) -> Result<Context> {
    check_name(name)?;
    let path = file_of(dir, name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure(format!(
            "unknown context {name:?} ({}: {e}): list them with `rnats context ls`",
            path.display()
        ))
    })?;
    let fields = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(format!("context file {} is not a JSON object", path.display()).into());
        }
    };
    Ok(Context { fields })
}

/// The context a command uses: the one named (`--context`, `NATS_CONTEXT`), else the selected
/// one; `None` when neither exists.
pub fn load(named: Option<&str>) -> Result<Option<Context>> {
    let dir = match nats_dir() {
        Ok(d) => d,
        Err(e) if named.is_none() => {
            let _ = e;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match named {
        Some(n) => read(&dir, n).map(Some),
        None => match selected_name(&dir) {
            Some(n) => read(&dir, &n).map(Some),
            None => Ok(None),
        },
    }
}

/// Writes `path` through a temporary file, so a crash leaves the old one or the new one.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let fail = |e: std::io::Error| Failure(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

pub fn run(g: &crate::Global, a: ContextArgs) -> Result<()> {
    let dir = nats_dir()?;
    match a.command {
        ContextCommand::Add(add) => {
            check_name(&add.name)?;
            let mut fields = Map::new();
            let mut put = |k: &str, v: Option<String>| {
                fields.insert(k.into(), Value::String(v.unwrap_or_default()));
            };
            put("description", add.description.clone());
            put("url", g.server_flag.clone());
            // `--user` alone is a token, as for the connection.
            match (&g.user, &g.password) {
                (Some(u), Some(p)) => {
                    put("user", Some(u.clone()));
                    put("password", Some(p.clone()));
                    put("token", None);
                }
                (Some(t), None) => {
                    put("user", None);
                    put("password", None);
                    put("token", Some(t.clone()));
                }
                _ => {
                    put("user", None);
                    put("password", None);
                    put("token", None);
                }
            }
            let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
            put("creds", path_str(&g.creds));
            put("nkey", path_str(&g.nkey));
            put("cert", path_str(&g.tlscert));
            put("key", path_str(&g.tlskey));
            put("ca", path_str(&g.tlsca));
            let text = serde_json::to_string_pretty(&Value::Object(fields))
                .map_err(|e| Failure(e.to_string()))?;
            let path = file_of(&dir, &add.name);
            write_atomic(&path, &text)?;
            eprintln!("Context {:?} saved in {}", add.name, path.display());
            if add.select {
                write_atomic(&dir.join("context.txt"), &add.name)?;
                eprintln!("Context {:?} selected", add.name);
            }
            Ok(())
        }
        ContextCommand::Select(n) => {
            read(&dir, &n.name)?;
            write_atomic(&dir.join("context.txt"), &n.name)?;
            eprintln!("Context {:?} selected", n.name);
            Ok(())
        }
        ContextCommand::Ls => {
            let selected = selected_name(&dir);
            let mut names: Vec<String> = std::fs::read_dir(dir.join("context"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            let n = e.file_name().to_string_lossy().into_owned();
                            n.strip_suffix(".json").map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            if names.is_empty() {
                eprintln!("No contexts: add one with `rnats context add NAME --server URL`");
                return Ok(());
            }
            println!("Known contexts:\n");
            for n in names {
                let mark = if selected.as_deref() == Some(n.as_str()) {
                    "*"
                } else {
                    ""
                };
                let desc = read(&dir, &n)
                    .ok()
                    .and_then(|c| c.get("description"))
                    .unwrap_or_default();
                println!("   {:<20} {desc}", format!("{n}{mark}"));
            }
            Ok(())
        }
        ContextCommand::Show(n) => {
            let name = match n.name.or_else(|| selected_name(&dir)) {
                Some(n) => n,
                None => {
                    return Err(
                        "no context selected: name one, or `rnats context select NAME`".into(),
                    );
                }
            };
            let c = read(&dir, &name)?;
            println!("Context {name:?} ({})\n", file_of(&dir, &name).display());
            for key in [
                "description",
                "url",
                "user",
                "creds",
                "nkey",
                "cert",
                "key",
                "ca",
            ] {
                if let Some(v) = c.get(key) {
                    println!("{key:>14}: {v}");
                }
            }
            for key in ["password", "token"] {
                if c.get(key).is_some() {
                    println!("{key:>14}: *********");
                }
            }
            Ok(())
        }
        ContextCommand::Rm(n) => {
            read(&dir, &n.name)?;
            let path = file_of(&dir, &n.name);
            std::fs::remove_file(&path)
                .map_err(|e| Failure(format!("cannot delete {}: {e}", path.display())))?;
            if selected_name(&dir).as_deref() == Some(n.name.as_str()) {
                let _ = std::fs::remove_file(dir.join("context.txt"));
            }
            eprintln!("Context {:?} deleted", n.name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("prod-1.eu_west").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}

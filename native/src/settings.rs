//! Loading the configuration: `wrangler.toml` `[vars]` (or `[env.<name>.vars]`), overridden by
//! environment variables of the same names, or the embedded default when there is no file; and the
//! static folder its `[assets]` table declares, which the server serves as Cloudflare does.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use switchboard_core::config::{Config, EMBEDDED_DEFAULT_VARS, keys};

/// Where the configuration came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(String),
    Embedded,
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
    /// The static folder of `[assets] directory`, relative paths taken from the file's folder.
    pub assets: Option<PathBuf>,
}

/// Reads the configuration. A missing file is fine only when `required` is false (the path was not
/// given explicitly); then the embedded default applies, with no static folder.
pub fn load(
    path: &Path,
    environment: Option<&str>,
    required: bool,
    overrides: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Loaded> {
    let mut assets = None;
    let (mut vars, source) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let document: toml::Table =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            assets = assets_directory(&document, environment).map(|directory| {
                let base = path.parent().unwrap_or_else(|| Path::new("."));
                base.join(directory)
            });
            (
                vars_from_document(&document, environment)
                    .with_context(|| format!("{}", path.display()))?,
                Source::File(path.display().to_string()),
            )
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            if environment.is_some() {
                bail!(
                    "--env needs a configuration file, and {} does not exist",
                    path.display()
                );
            }
            let Value::Object(vars) = serde_json::from_str(EMBEDDED_DEFAULT_VARS)? else {
                bail!("embedded default is not a table");
            };
            (vars, Source::Embedded)
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    for key in keys::ALL {
        if let Some(value) = overrides(key) {
            // CHANNELS is JSON; the others are plain strings that `Config` parses itself.
            let value = match *key {
                keys::CHANNELS => serde_json::from_str(&value)
                    .with_context(|| format!("environment variable {key} is not valid JSON"))?,
                _ => Value::String(value),
            };
            vars.insert((*key).to_string(), value);
        }
    }
    let config = Config::from_vars(&vars)?;
    Ok(Loaded {
        config,
        source,
        assets,
    })
}

/// `[assets] directory`, or `[env.<environment>.assets] directory`, which Wrangler lets an
/// environment override.
fn assets_directory(document: &toml::Table, environment: Option<&str>) -> Option<String> {
    let directory = |table: Option<&toml::Value>| {
        table?
            .get("assets")?
            .get("directory")?
            .as_str()
            .map(str::to_string)
    };
    let top = document
        .get("assets")
        .and_then(|assets| assets.get("directory"));
    environment
        .and_then(|name| directory(document.get("env").and_then(|envs| envs.get(name))))
        .or_else(|| top.and_then(|value| value.as_str()).map(str::to_string))
}

/// The `[vars]` table of a wrangler.toml, or `[env.<environment>.vars]`, as JSON.
pub fn vars_from_toml(text: &str, environment: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    vars_from_document(&toml::from_str(text)?, environment)
}

fn vars_from_document(
    document: &toml::Table,
    environment: Option<&str>,
) -> anyhow::Result<Map<String, Value>> {
    let vars = match environment {
        None => document.get("vars"),
        Some(name) => document
            .get("env")
            .and_then(|envs| envs.get(name))
            .with_context(|| format!("no [env.{name}] section"))?
            .get("vars"),
    };
    let Some(vars) = vars else {
        bail!(
            "no [{}vars] table",
            environment.map(|e| format!("env.{e}.")).unwrap_or_default()
        );
    };
    match serde_json::to_value(vars)? {
        Value::Object(map) => Ok(map),
        _ => bail!("[vars] must be a table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "x"
[vars]
PING_INTERVAL = 1000
[vars.CHANNELS."/"]
relay = "others"
[env.conformance.vars]
PING_INTERVAL = 300
[env.conformance.vars.CHANNELS."/"]
behaviour = "conformance"
namespaces = ["/", "/custom"]
"#;

    #[test]
    fn reads_top_level_and_environment_vars() {
        let top = Config::from_vars(&vars_from_toml(FILE, None).unwrap()).unwrap();
        assert_eq!(top.policy_for("").unwrap().ping_interval_ms, 1000);
        let conformance =
            Config::from_vars(&vars_from_toml(FILE, Some("conformance")).unwrap()).unwrap();
        let policy = conformance.policy_for("").unwrap();
        assert_eq!(policy.ping_interval_ms, 300);
        assert!(policy.allows_namespace("/custom"));
        assert!(vars_from_toml(FILE, Some("missing")).is_err());
    }

    #[test]
    fn missing_default_file_falls_back_to_embedded_and_env_overrides() {
        let loaded = load(
            Path::new("/nonexistent/wrangler.toml"),
            None,
            false,
            |key| (key == "PING_INTERVAL").then(|| "1234".to_string()),
        )
        .unwrap();
        assert_eq!(loaded.source, Source::Embedded);
        assert_eq!(loaded.assets, None);
        assert_eq!(loaded.config.policy_for("").unwrap().ping_interval_ms, 1234);
        assert!(
            load(Path::new("/nonexistent/wrangler.toml"), None, true, |_| {
                None
            })
            .is_err()
        );
    }

    #[test]
    fn the_static_folder_is_relative_to_the_file_and_environments_may_override_it() {
        let dir = std::env::temp_dir().join(format!("switchboard-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wrangler.toml");
        std::fs::write(
            &file,
            format!("{FILE}\n[assets]\ndirectory = \"public\"\n[env.conformance.assets]\ndirectory = \"other\"\n"),
        )
        .unwrap();
        assert_eq!(
            load(&file, None, true, |_| None).unwrap().assets,
            Some(dir.join("public"))
        );
        assert_eq!(
            load(&file, Some("conformance"), true, |_| None)
                .unwrap()
                .assets,
            Some(dir.join("other"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_config_names_the_key() {
        let err = load(Path::new("/nonexistent"), None, false, |key| {
            (key == "MAX_PAYLOAD").then(|| "lots".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("MAX_PAYLOAD"), "{err}");
    }
}

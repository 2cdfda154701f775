//! Loading the channel configuration: `wrangler.toml` `[vars]` (or `[env.<name>.vars]`), overridden by
//! environment variables of the same names, or the embedded default when there is no file.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use switchboard_core::config::{Config, EMBEDDED_DEFAULT_VARS, keys};

/// Where the configuration came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(String),
    Embedded,
}

/// Reads the configuration. A missing file is fine only when `required` is false (the path was not
/// given explicitly); then the embedded default applies.
pub fn load(
    path: &Path,
    environment: Option<&str>,
    required: bool,
    overrides: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Config, Source)> {
    let (mut vars, source) = match std::fs::read_to_string(path) {
        Ok(text) => (
            vars_from_toml(&text, environment).with_context(|| format!("{}", path.display()))?,
            Source::File(path.display().to_string()),
        ),
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
    Ok((config, source))
}

/// The `[vars]` table of a wrangler.toml, or `[env.<environment>.vars]`, as JSON.
pub fn vars_from_toml(text: &str, environment: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    let document: toml::Table = toml::from_str(text)?;
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
        let (config, source) = load(
            Path::new("/nonexistent/wrangler.toml"),
            None,
            false,
            |key| (key == "PING_INTERVAL").then(|| "1234".to_string()),
        )
        .unwrap();
        assert_eq!(source, Source::Embedded);
        assert_eq!(config.policy_for("").unwrap().ping_interval_ms, 1234);
        assert!(
            load(Path::new("/nonexistent/wrangler.toml"), None, true, |_| {
                None
            })
            .is_err()
        );
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

//! The optional TOML configuration file. Its keys are the flag names in
//! snake_case (`listen`, `data_dir`, `api_keys`, …). Each key becomes the
//! setting's `COFFER_*` environment variable unless that variable is already
//! set, so the order of precedence is: flags, environment, file, defaults.
//! The key → variable mapping comes from the command's own definition, so
//! there is no second list of settings to keep in step.

use anyhow::Context;
use std::path::Path;

/// Largest configuration file accepted.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Finds `--config FILE` / `--config=FILE` in the arguments, else `COFFER_CONFIG`.
pub fn path_from(arguments: &[String]) -> Option<String> {
    let mut iterator = arguments.iter();
    while let Some(argument) = iterator.next() {
        if argument == "--config" {
            return iterator.next().cloned();
        }
        if let Some(path) = argument.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    std::env::var("COFFER_CONFIG").ok()
}

/// Reads the file and exports its settings as environment variables.
/// Must run before any thread is started.
pub fn apply(path: &Path, command: &clap::Command) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("configuration file {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= CONFIG_FILE_BYTES_MAX,
        "configuration file {} is larger than 1 MiB",
        path.display()
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let settings: Vec<(String, String)> = command
        .get_arguments()
        .filter(|argument| argument.get_id() != "config")
        .filter_map(|argument| Some((argument.get_id().to_string(), argument.get_env()?.to_str()?.to_owned())))
        .collect();
    for (key, value) in table {
        let Some((_, variable)) = settings.iter().find(|(name, _)| *name == key) else {
            let known: Vec<_> = settings.iter().map(|(name, _)| name.as_str()).collect();
            anyhow::bail!(
                "{}: unknown setting {key:?}; known settings: {}",
                path.display(),
                known.join(", ")
            );
        };
        // Validate every value, even one the environment overrides: a bad
        // file is an error whatever else is set.
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow::anyhow!("{key}: list items must be strings"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            other => anyhow::bail!("{key}: unsupported value {other}"),
        };
        if std::env::var_os(variable).is_some() {
            continue;
        }
        // SAFETY of intent: called from main before any other thread exists.
        std::env::set_var(variable, text);
    }
    Ok(())
}

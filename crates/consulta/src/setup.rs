//! `generate-config` and `generate-registration`: the admin's set-up workflow, as with mautrix bridges.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use consulta_appservice::config::{Config, EXAMPLE, generate_missing_secrets};
use consulta_appservice::registration::{Registration, homeserver_snippet};

/// Writes `contents` to a new file at `path` that only its owner can read (0600). Refuses when
/// `path` exists, in the same system call that creates it.
pub(crate) fn create_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Writes `contents` to `path` readable by its owner only, replacing it atomically.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

pub fn generate_config(output: &Path, force: bool) -> anyhow::Result<()> {
    if output.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", output.display());
    }
    write_private(output, EXAMPLE)?;
    println!("Wrote the example configuration to {}.", output.display());
    println!("Edit it (homeserver.address, homeserver.domain, database.uri), then run:");
    println!(
        "  consulta generate-registration -c {} -r consulta-registration.yaml",
        output.display()
    );
    Ok(())
}

pub fn generate_registration(config_path: &Path, registration_path: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let (text, generated) = generate_missing_secrets(&text);
    // Parse before writing anything, so a broken config is never half-updated.
    let config = Config::from_yaml_with_env(&text, std::env::vars())?;
    config.check_ready_to_run()?;
    if !generated.is_empty() {
        write_private(config_path, &text)?;
        println!(
            "Generated {} in {} (kept from now on).",
            generated.join(", "),
            config_path.display()
        );
    }
    write_private(
        registration_path,
        &Registration::from_config(&config).to_yaml()?,
    )?;
    let absolute = fs::canonicalize(registration_path)?;
    println!(
        "Wrote the appservice registration to {}.",
        absolute.display()
    );

    let snippet_path = registration_path.with_file_name("consulta-homeserver-snippet.yaml");
    write_private(
        &snippet_path,
        &homeserver_snippet(&config, &absolute.display().to_string()),
    )?;
    println!();
    println!("Next steps on the homeserver:");
    println!("  1. pip install synapse-http-antispam   (in Synapse's Python environment)");
    println!(
        "  2. add the settings in {} to homeserver.yaml",
        snippet_path.display()
    );
    println!("     (it holds the gate's shared secret: keep it private)");
    println!(
        "  3. restart Synapse, then: consulta run -c {}",
        config_path.display()
    );
    Ok(())
}

//! Where the master key comes from (file section `[keys]`, `CRM_MASTER_KEY_FILE`,
//! `CRM_MASTER_KEY`, `--master-key-file`). The master key wraps the data keys of personal
//! data (see [`crate::keys`]); it never lives in the data directory or the log.
//!
//! Precedence as everywhere: `[keys] master_key_file` < `CRM_MASTER_KEY_FILE` or
//! `CRM_MASTER_KEY` < `--master-key-file`. With none of them, the file beside the data
//! directory (`<data_dir>.master-key`, what `crm keys init` and `crm demo` create) is used
//! when it exists.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::keys::{KeyError, MasterKey, MASTER_KEY_ENV};

/// Variable naming the master key file.
pub const MASTER_KEY_FILE_ENV: &str = "CRM_MASTER_KEY_FILE";
/// Variable naming the key store's directory.
pub const KEYS_DIR_ENV: &str = "CRM_KEYS_DIR";

/// Where the master key comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MasterKeySource {
    /// Nothing configured: the default file beside the data directory, if it exists.
    #[default]
    Default,
    /// A file holding 64 hex characters.
    File(PathBuf),
    /// The value of `CRM_MASTER_KEY`.
    Env(MasterKey),
}

/// The file section `[keys]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeysSection {
    master_key_file: Option<PathBuf>,
    pub(super) dir: Option<PathBuf>,
}

/// Resolves the source from the file section, the environment and the flag.
///
/// # Errors
/// [`KeyError::BadMasterKey`] when `CRM_MASTER_KEY` is set but not 64 hex characters.
pub(super) fn resolve(
    section: Option<&KeysSection>,
    flag: Option<&PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<MasterKeySource, KeyError> {
    if let Some(file) = flag {
        return Ok(MasterKeySource::File(file.clone()));
    }
    if let Some(file) = env(MASTER_KEY_FILE_ENV).filter(|v| !v.trim().is_empty()) {
        return Ok(MasterKeySource::File(PathBuf::from(file)));
    }
    if let Some(hex) = env(MASTER_KEY_ENV).filter(|v| !v.trim().is_empty()) {
        return MasterKey::from_hex(&hex, MASTER_KEY_ENV).map(MasterKeySource::Env);
    }
    Ok(section
        .and_then(|s| s.master_key_file.clone())
        .map_or(MasterKeySource::Default, MasterKeySource::File))
}

/// The default master key file of `data_dir`: `<data_dir>.master-key`, beside it.
#[must_use]
pub fn default_master_key_file(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map_or_else(|| "crm-data".into(), |n| n.to_string_lossy().into_owned());
    let parent = data_dir.parent().unwrap_or_else(|| Path::new("."));
    parent.join(format!("{name}.master-key"))
}

/// The master key `source` gives, `None` when nothing is configured and the default file
/// (`default_file`) does not exist.
///
/// # Errors
/// [`KeyError::Io`] or [`KeyError::BadMasterKey`] for a named file that cannot be read or
/// holds no key.
pub fn load(source: &MasterKeySource, default_file: &Path) -> Result<Option<MasterKey>, KeyError> {
    match source {
        MasterKeySource::File(file) => MasterKey::load(Some(file), |_| None).map(Some),
        MasterKeySource::Env(key) => Ok(Some(key.clone())),
        MasterKeySource::Default if default_file.exists() => {
            MasterKey::load(Some(default_file), |_| None).map(Some)
        }
        MasterKeySource::Default => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_beats_the_environment_which_beats_the_file_section() {
        let section = KeysSection {
            master_key_file: Some("/from-file".into()),
            dir: None,
        };
        let hex = "ab".repeat(32);
        let env_key = |k: &str| (k == MASTER_KEY_ENV).then(|| hex.clone());
        let none = |_: &str| None;
        let flag = PathBuf::from("/from-flag");
        assert_eq!(
            resolve(Some(&section), Some(&flag), &env_key).unwrap(),
            MasterKeySource::File(flag)
        );
        assert!(matches!(
            resolve(Some(&section), None, &env_key).unwrap(),
            MasterKeySource::Env(_)
        ));
        assert_eq!(
            resolve(Some(&section), None, &none).unwrap(),
            MasterKeySource::File("/from-file".into())
        );
        assert_eq!(
            resolve(None, None, &none).unwrap(),
            MasterKeySource::Default
        );
        let bad = |k: &str| (k == MASTER_KEY_ENV).then(|| "short".to_owned());
        assert!(matches!(
            resolve(None, None, &bad),
            Err(KeyError::BadMasterKey(_))
        ));
    }

    #[test]
    fn the_default_file_sits_beside_the_data_directory() {
        assert_eq!(
            default_master_key_file(Path::new("crm-data")),
            PathBuf::from("crm-data.master-key")
        );
        assert_eq!(
            default_master_key_file(Path::new("/var/lib/crm/")),
            PathBuf::from("/var/lib/crm.master-key")
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let default = default_master_key_file(&data);
        assert_eq!(load(&MasterKeySource::Default, &default).unwrap(), None);
        let key = MasterKey::generate().unwrap();
        std::fs::write(&default, key.to_hex()).unwrap();
        assert_eq!(
            load(&MasterKeySource::Default, &default).unwrap(),
            Some(key)
        );
    }
}

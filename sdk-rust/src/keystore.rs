//! The agent key store: one file per agent name in a per-user directory.
//!
//! The directory is created with mode 0700 and each key file with mode 0600; a
//! directory or key file that other users can access is refused, never "fixed"
//! silently. A key is written to a temporary file, flushed, and then linked into
//! place without replacing an existing file, so two processes creating the same
//! agent's key at once end with one key that both use. Optionally the private key
//! is encrypted with a passphrase (Argon2id, then XChaCha20-Poly1305). The private
//! key never leaves the process except into these files; this module never logs.
//! The format is described in `docs/sdk-rust.md`.

use std::io::Write;
use std::path::{Path, PathBuf};

use agentid_protocol::b64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::signing::AgentKey;
use crate::Error;

/// The `format` member of every key file this version writes and reads.
pub const KEY_FILE_FORMAT: &str = "agentid-key-v1";
/// The name of the passphrase encryption scheme in key files.
pub const ENCRYPTION_SCHEME: &str = "argon2id-xchacha20poly1305";
/// Argon2id memory cost for new encrypted key files, in KiB (19 MiB, OWASP's
/// recommended minimum for Argon2id).
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes for new encrypted key files.
pub const ARGON2_T_COST: u32 = 2;
/// Argon2id lanes for new encrypted key files.
pub const ARGON2_P_COST: u32 = 1;

/// The most a key file may ask of the KDF (so an edited file cannot make loading
/// exhaust memory or time): 1 GiB, 16 passes, 8 lanes.
const ARGON2_LIMITS: (u32, u32, u32) = (1024 * 1024, 16, 8);
/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// Where agents' private keys live on this machine.
///
/// ```
/// # fn demo() -> Result<(), agentid::Error> {
/// let dir = std::env::temp_dir().join(format!("agentid-doc-{}", std::process::id()));
/// let store = agentid::KeyStore::open(&dir)?;
/// let (key, created) = store.load_or_create("my-agent")?;
/// assert!(created);
/// let again = store.load("my-agent")?.expect("the key was stored");
/// assert_eq!(again.key_id(), key.key_id());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(()) }
/// # demo().unwrap();
/// ```
#[derive(Clone)]
pub struct KeyStore {
    dir: PathBuf,
    passphrase: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    name: String,
    algorithm: String,
    public_key: String,
    private_key: PrivateKey,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "encryption", deny_unknown_fields)]
enum PrivateKey {
    #[serde(rename = "none")]
    Plain { seed: String },
    #[serde(rename = "argon2id-xchacha20poly1305")]
    Encrypted {
        argon2: KdfParams,
        nonce: String,
        ciphertext: String,
    },
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        if let PrivateKey::Plain { seed } = self {
            seed.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

/// The platform's per-user data directory for agent keys:
/// `$XDG_DATA_HOME/agentid/keys` (usually `~/.local/share/agentid/keys`) on Linux,
/// `~/Library/Application Support/agentid/keys` on macOS, `%APPDATA%\agentid\keys`
/// on Windows.
pub fn default_key_dir() -> Result<PathBuf, Error> {
    dirs::data_dir()
        .map(|d| d.join("agentid").join("keys"))
        .ok_or_else(|| {
            Error::Config(
                "no per-user data directory is known on this platform: set AGENTID_KEY_DIR"
                    .to_owned(),
            )
        })
}

/// The file name for an agent's key: names made of `a-z 0-9 _ -` and inner dots
/// are used as they are; every other byte is written `%xx`, so distinct names
/// never share a file, even on case-insensitive file systems.
fn file_stem(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, byte) in name.bytes().enumerate() {
        let plain = byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || byte == b'_'
            || byte == b'-'
            || (byte == b'.' && i > 0);
        if plain {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02x}"));
        }
    }
    if out.len() > 200 {
        use sha2::Digest;
        return format!(
            "sha256-{}",
            hex::encode(sha2::Sha256::digest(name.as_bytes()))
        );
    }
    out
}

/// Checks an agent name the way the server does (1 to 100 characters, no control
/// characters, surrounding whitespace ignored) and returns it trimmed.
pub(crate) fn check_name(name: &str) -> Result<&str, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "an agent name is 1 to 100 characters without control characters".to_owned(),
        ));
    }
    Ok(name)
}

impl KeyStore {
    /// Opens (creating it with mode 0700 if needed) the key directory `dir`.
    /// Refuses a directory other users can access.
    pub fn open(dir: impl Into<PathBuf>) -> Result<KeyStore, Error> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        check_private(&dir, true)?;
        Ok(KeyStore {
            dir,
            passphrase: None,
        })
    }

    /// Opens the platform's default directory ([`default_key_dir`]).
    pub fn open_default() -> Result<KeyStore, Error> {
        KeyStore::open(default_key_dir()?)
    }

    /// Encrypts keys this store creates with `passphrase`, and decrypts encrypted
    /// key files with it. A store with a passphrase refuses to load an
    /// unencrypted key file (so nobody believes a plaintext key is protected).
    pub fn with_passphrase(mut self, passphrase: impl Into<String>) -> KeyStore {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key file of agent `name`.
    pub fn path_for(&self, name: &str) -> Result<PathBuf, Error> {
        let name = check_name(name)?;
        Ok(self.dir.join(format!("{}.key", file_stem(name))))
    }

    /// The key file staged for a rotation of agent `name`.
    fn next_path_for(&self, name: &str) -> Result<PathBuf, Error> {
        let name = check_name(name)?;
        Ok(self.dir.join(format!("{}.next.key", file_stem(name))))
    }

    /// Agent `name`'s key, if it has a key file. Refuses a file other users can
    /// access, a file in an unknown format, a public key that does not match the
    /// private key, and (for encrypted files) a missing or wrong passphrase.
    pub fn load(&self, name: &str) -> Result<Option<AgentKey>, Error> {
        self.read_key(&self.path_for(name)?)
    }

    /// Agent `name`'s key: the stored one, or a new one written to its key file.
    /// Returns whether it was created. Safe against concurrent callers: the first
    /// file written wins and every caller returns that key.
    pub fn load_or_create(&self, name: &str) -> Result<(AgentKey, bool), Error> {
        let path = self.path_for(name)?;
        for _ in 0..3 {
            if let Some(key) = self.read_key(&path)? {
                return Ok((key, false));
            }
            let key = AgentKey::generate();
            if self.write_new(&path, check_name(name)?, &key)? {
                return Ok((key, true));
            }
            // Another process created it between our read and our link: use theirs.
        }
        Err(Error::key_store(
            "the key file keeps appearing and disappearing",
            path,
        ))
    }

    /// Writes `key` as the staged next key of agent `name` (before a rotation is
    /// sent), replacing any earlier staged key.
    pub(crate) fn stage_next(&self, name: &str, key: &AgentKey) -> Result<(), Error> {
        let path = self.next_path_for(name)?;
        let text = self.encode(check_name(name)?, key)?;
        let tmp = self.write_temp(&path, &text)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)
    }

    /// The staged next key of agent `name`, if any.
    pub(crate) fn load_next(&self, name: &str) -> Result<Option<AgentKey>, Error> {
        self.read_key(&self.next_path_for(name)?)
    }

    /// Makes the staged next key the agent's key (after the server accepted it).
    pub(crate) fn promote_next(&self, name: &str) -> Result<(), Error> {
        let next = self.next_path_for(name)?;
        let current = self.path_for(name)?;
        std::fs::rename(&next, &current).map_err(|e| Error::io(&current, e))?;
        sync_dir(&self.dir)
    }

    /// Deletes the staged next key of agent `name` (a rotation that failed).
    pub(crate) fn discard_next(&self, name: &str) {
        if let Ok(path) = self.next_path_for(name) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn read_key(&self, path: &Path) -> Result<Option<AgentKey>, Error> {
        let text = match read_private_file(path)? {
            Some(text) => text,
            None => return Ok(None),
        };
        let file: KeyFile = serde_json::from_slice(&text)
            .map_err(|e| Error::key_store(format!("not an agentid key file: {e}"), path))?;
        if file.format != KEY_FILE_FORMAT || file.algorithm != "Ed25519" {
            return Err(Error::key_store(
                format!(
                    "unsupported key file format `{}` / algorithm `{}`",
                    file.format, file.algorithm
                ),
                path,
            ));
        }
        let seed = match &file.private_key {
            PrivateKey::Plain { seed } => {
                if self.passphrase.is_some() {
                    return Err(Error::key_store(
                        "a passphrase was given but this key file is not encrypted",
                        path,
                    ));
                }
                decode_seed(seed).ok_or_else(|| Error::key_store("malformed private key", path))?
            }
            PrivateKey::Encrypted {
                argon2,
                nonce,
                ciphertext,
            } => {
                let passphrase = self.passphrase.as_ref().ok_or_else(|| {
                    Error::key_store(
                        "the key file is encrypted: a passphrase is needed (AGENTID_KEY_PASSPHRASE)",
                        path,
                    )
                })?;
                decrypt_seed(passphrase, &file.public_key, argon2, nonce, ciphertext)
                    .map_err(|why| Error::key_store(why, path))?
            }
        };
        let key = AgentKey::from_seed(&seed)
            .map_err(|_| Error::key_store("the private key is not usable", path))?;
        if key.public_key() != file.public_key {
            return Err(Error::key_store(
                "the public key does not belong to the private key",
                path,
            ));
        }
        Ok(Some(key))
    }

    /// The key file text for `key`.
    fn encode(&self, name: &str, key: &AgentKey) -> Result<Zeroizing<Vec<u8>>, Error> {
        let public_key = key.public_key();
        let private_key = match &self.passphrase {
            None => PrivateKey::Plain {
                seed: b64::encode(key.seed().as_ref()),
            },
            Some(passphrase) => encrypt_seed(passphrase, &public_key, &key.seed())
                .map_err(|why| Error::key_store(why, &self.dir))?,
        };
        let file = KeyFile {
            format: KEY_FILE_FORMAT.to_owned(),
            name: name.to_owned(),
            algorithm: "Ed25519".to_owned(),
            public_key,
            private_key,
        };
        // Reserve enough that the buffer never reallocates (leaving copies behind).
        let mut text = Zeroizing::new(Vec::with_capacity(4096));
        serde_json::to_writer_pretty(&mut *text, &file)
            .map_err(|e| Error::key_store(format!("could not encode the key: {e}"), &self.dir))?;
        text.push(b'\n');
        Ok(text)
    }

    /// Writes a new key file unless one exists; whether this call created it.
    fn write_new(&self, path: &Path, name: &str, key: &AgentKey) -> Result<bool, Error> {
        let text = self.encode(name, key)?;
        let tmp = self.write_temp(path, &text)?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes `text` to a new private temporary file next to `path`, flushed to disk.
    fn write_temp(&self, path: &Path, text: &[u8]) -> Result<PathBuf, Error> {
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self
            .dir
            .join(format!(".{file_name}.tmp-{}", hex::encode(suffix)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(text)?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        Ok(tmp)
    }
}

fn decode_seed(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(b64::decode(text)?);
    let mut seed = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return None;
    }
    seed.copy_from_slice(&bytes);
    Some(seed)
}

fn derive_key(passphrase: &str, params: &KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    let (max_m, max_t, max_p) = ARGON2_LIMITS;
    if params.m_cost_kib > max_m || params.t_cost > max_t || params.p_cost > max_p {
        return Err("the key file asks for more KDF work than this SDK allows".to_owned());
    }
    let salt = b64::decode(&params.salt).ok_or("malformed salt")?;
    let argon_params =
        argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|e| format!("bad KDF parameters: {e}"))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), &salt, key.as_mut())
        .map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(key)
}

/// The associated data binds the ciphertext to the file format and public key.
fn aad(public_key: &str) -> Vec<u8> {
    format!("{KEY_FILE_FORMAT}:{public_key}").into_bytes()
}

fn encrypt_seed(passphrase: &str, public_key: &str, seed: &[u8; 32]) -> Result<PrivateKey, String> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let params = KdfParams {
        m_cost_kib: ARGON2_M_COST_KIB,
        t_cost: ARGON2_T_COST,
        p_cost: ARGON2_P_COST,
        salt: b64::encode(salt),
    };
    let key = derive_key(passphrase, &params)?;
    let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|e| e.to_string())?;
    let aad = aad(public_key);
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: seed,
                aad: &aad,
            },
        )
        .map_err(|_| "encryption failed".to_owned())?;
    Ok(PrivateKey::Encrypted {
        argon2: params,
        nonce: b64::encode(nonce),
        ciphertext: b64::encode(ciphertext),
    })
}

fn decrypt_seed(
    passphrase: &str,
    public_key: &str,
    params: &KdfParams,
    nonce: &str,
    ciphertext: &str,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let nonce: [u8; 24] = b64::decode(nonce)
        .and_then(|n| n.try_into().ok())
        .ok_or("malformed nonce")?;
    let ciphertext = b64::decode(ciphertext).ok_or("malformed ciphertext")?;
    let key = derive_key(passphrase, params)?;
    let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|e| e.to_string())?;
    let aad = aad(public_key);
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| "wrong passphrase, or the key file was altered".to_owned())?,
    );
    if plain.len() != 32 {
        return Err("malformed private key".to_owned());
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&plain);
    Ok(seed)
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| Error::io(dir, e))
}

/// Refuses a file or directory that users other than its owner can access.
#[cfg(unix)]
fn check_private(path: &Path, is_dir: bool) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    check_mode(path, &meta, is_dir)
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _is_dir: bool) -> Result<(), Error> {
    Ok(())
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata, is_dir: bool) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    if is_dir != meta.is_dir() || (!is_dir && !meta.is_file()) {
        let what = if is_dir { "a directory" } else { "a file" };
        return Err(Error::key_store(format!("not {what}"), path));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let wanted = if is_dir { "700" } else { "600" };
        return Err(Error::key_store(
            format!(
                "other users can access it (mode {mode:03o}); refusing to use it: chmod {wanted} it"
            ),
            path,
        ));
    }
    Ok(())
}

/// Reads a key file after checking, on the open file, that only its owner can
/// access it. `None` when there is no such file.
fn read_private_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    #[cfg(unix)]
    check_mode(path, &meta, false)?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(Error::key_store("the key file is too large", path));
    }
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(text))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let handle = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        handle.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        std::env::temp_dir().join(format!("agentid-keystore-{}", hex::encode(suffix)))
    }

    #[test]
    fn file_names_are_distinct_and_safe() {
        assert_eq!(file_stem("my-agent"), "my-agent");
        assert_eq!(file_stem("My Agent"), "%4dy%20%41gent");
        assert_eq!(file_stem("../etc"), "%2e.%2fetc");
        assert_ne!(file_stem("A"), file_stem("a"));
        assert!(file_stem(&"é".repeat(100)).starts_with("sha256-"));
    }

    #[cfg(unix)]
    #[test]
    fn creates_private_files_and_refuses_readable_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        let store = KeyStore::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let (key, created) = store.load_or_create("a").unwrap();
        assert!(created);
        let path = store.path_for("a").unwrap();
        assert_eq!(mode(&path), 0o600);
        let (same, created) = store.load_or_create("a").unwrap();
        assert!(!created);
        assert_eq!(same.key_id(), key.key_id());
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load("a").unwrap_err();
        assert!(matches!(err, Error::KeyStore { .. }), "{err}");
        assert!(err.to_string().contains("mode 644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(KeyStore::open(&dir), Err(Error::KeyStore { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_plain_file_holds_the_key_and_rejects_tampering() {
        let dir = temp_dir();
        let store = KeyStore::open(&dir).unwrap();
        let (key, _) = store.load_or_create("agent").unwrap();
        let path = store.path_for("agent").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["format"], KEY_FILE_FORMAT);
        assert_eq!(json["name"], "agent");
        assert_eq!(json["public_key"], key.public_key().as_str());
        assert_eq!(json["private_key"]["encryption"], "none");
        assert_eq!(
            json["private_key"]["seed"],
            b64::encode(key.seed().as_ref()).as_str()
        );
        // Another public key next to this private key is refused.
        let other = AgentKey::generate();
        std::fs::write(&path, text.replace(&key.public_key(), &other.public_key())).unwrap();
        let err = store.load("agent").unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passphrase_encryption_round_trips_and_needs_the_right_passphrase() {
        let dir = temp_dir();
        let store = KeyStore::open(&dir)
            .unwrap()
            .with_passphrase("correct horse");
        let (key, _) = store.load_or_create("enc").unwrap();
        let path = store.path_for("enc").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&b64::encode(key.seed().as_ref())));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["private_key"]["encryption"], ENCRYPTION_SCHEME);
        assert_eq!(json["private_key"]["argon2"]["m_cost_kib"], 19456);
        assert!(!format!("{store:?}").contains("correct"));

        let reloaded = store.load("enc").unwrap().unwrap();
        assert_eq!(reloaded.key_id(), key.key_id());

        let wrong = KeyStore::open(&dir).unwrap().with_passphrase("wrong");
        let err = wrong.load("enc").unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        let none = KeyStore::open(&dir).unwrap();
        let err = none.load("enc").unwrap_err();
        assert!(err.to_string().contains("passphrase is needed"), "{err}");

        // Swapping the public key breaks the authenticated data.
        let other = AgentKey::generate();
        std::fs::write(&path, text.replace(&key.public_key(), &other.public_key())).unwrap();
        assert!(store.load("enc").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_creation_ends_with_one_key() {
        let dir = temp_dir();
        let store = KeyStore::open(&dir).unwrap();
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| store.load_or_create("race").unwrap().0.key_id()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

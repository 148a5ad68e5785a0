//! Sealed objects and envelope keys.
//!
//! Every object Highrise writes to object storage is *sealed*: optionally compressed with
//! LZ4, then encrypted and authenticated with AES-256-GCM under the tenant's data key. The
//! object's own key (its path) is the associated data, so an object copied or renamed to
//! another path — or into another tenant's prefix — does not open. Layout:
//!
//! ```text
//! "HRS2" | flags (1 byte, bit 0 = lz4) | key generation (u32 BE) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! "HRS1" | flags | nonce | ciphertext | tag        (before key rotation: generation 1)
//! ```
//!
//! A tenant's data keys come in generations ([`Keyring`]): rotating adds one, the newest
//! seals, and an object names the generation that sealed it, so every generation still
//! kept opens what it sealed; once every object is sealed again under the newest, the
//! older ones can go. An object whose generation is gone does not open (crypto-shredding).
//!
//! Tenant data keys are themselves sealed (without compression) under the control plane's
//! master key, with the org id as associated data: envelope encryption.

use crate::Error;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 4] = b"HRS1";
const MAGIC_V2: &[u8; 4] = b"HRS2";
const FLAG_LZ4: u8 = 1;
const HEADER: usize = 4 + 1 + NONCE_LEN;
const HEADER_V2: usize = 4 + 1 + 4 + NONCE_LEN;

/// A 256-bit AES-GCM key: a tenant's data key or the control plane's master key.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Crypto("no randomness".into()))?;
        Ok(Self { bytes })
    }

    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let v = hex::decode(s.trim()).map_err(|_| Error::Crypto("key is not hex".into()))?;
        let bytes: [u8; 32] = v.try_into().map_err(|_| Error::Crypto("key is not 32 bytes".into()))?;
        Ok(Self { bytes })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    fn aead(&self) -> LessSafeKey {
        // 32 bytes is always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.bytes).expect("32-byte AES-256 key"))
    }

    /// Seals `plain` for the object named `name`; compresses first when asked and when it
    /// pays. (Objects of a tenant are sealed through its [`Keyring`], which names the key's
    /// generation; this single-key form seals wrapped keys.)
    pub fn seal(&self, name: &str, plain: &[u8], compress: bool) -> Result<Vec<u8>, Error> {
        self.seal_as(None, name, plain, compress)
    }

    fn seal_as(&self, generation: Option<u32>, name: &str, plain: &[u8], compress: bool) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Crypto("no randomness".into()))?;
        let mut flags = 0u8;
        let mut body = if compress {
            let c = lz4_flex::block::compress_prepend_size(plain);
            if c.len() < plain.len() {
                flags |= FLAG_LZ4;
                c
            } else {
                plain.to_vec()
            }
        } else {
            plain.to_vec()
        };
        let tag = self
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut body,
            )
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_V2 + body.len() + tag.as_ref().len());
        match generation {
            Some(g) => {
                out.extend_from_slice(MAGIC_V2);
                out.push(flags);
                out.extend_from_slice(&g.to_be_bytes());
            }
            None => {
                out.extend_from_slice(MAGIC);
                out.push(flags);
            }
        }
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens an object sealed by [`Key::seal`] under the same name and key.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        Keyring::from(self.clone()).open(name, sealed)
    }

    /// Authenticates and decrypts the body after a header of `header` bytes, in place.
    fn decrypt_body(
        &self,
        name: &str,
        sealed: &mut [u8],
        header: usize,
        nonce: [u8; NONCE_LEN],
    ) -> Result<std::ops::Range<usize>, Error> {
        let plain_len = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed[header..],
            )
            .map_err(|_| {
                corrupt(
                    name,
                    "authentication failed: damaged, renamed, or sealed with another key",
                )
            })?
            .len();
        Ok(header..header + plain_len)
    }

    /// Wraps a tenant's data key under this (master) key, bound to the org.
    pub fn wrap(&self, data_key: &Key, org_id: &str) -> Result<String, Error> {
        Ok(hex::encode(self.seal(
            &format!("data-key/{org_id}"),
            &data_key.bytes,
            false,
        )?))
    }

    /// Unwraps what [`Key::wrap`] produced for the same org.
    pub fn unwrap_key(&self, wrapped: &str, org_id: &str) -> Result<Key, Error> {
        let name = format!("data-key/{org_id}");
        let sealed = hex::decode(wrapped).map_err(|_| Error::Crypto("wrapped key is not hex".into()))?;
        let plain = self.open(&name, &sealed)?;
        let bytes: [u8; 32] = plain
            .try_into()
            .map_err(|_| Error::Crypto("wrapped key is not 32 bytes".into()))?;
        Ok(Key { bytes })
    }
}

/// A tenant's data keys by generation: the newest seals, each one kept opens what it
/// sealed.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// Newest first; never empty.
    keys: Vec<(u32, Key)>,
}

impl From<Key> for Keyring {
    /// One key, generation 1 (what sealed objects before any rotation).
    fn from(key: Key) -> Self {
        Self { keys: vec![(1, key)] }
    }
}

impl Keyring {
    /// The keys with their generations, in any order; the highest generation seals.
    pub fn new(mut keys: Vec<(u32, Key)>) -> Result<Self, Error> {
        if keys.is_empty() {
            return Err(Error::Crypto("a keyring needs a key".into()));
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        if keys.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Crypto("two keys of one generation".into()));
        }
        Ok(Self { keys })
    }

    /// The generation that seals.
    pub fn current(&self) -> u32 {
        self.keys[0].0
    }

    /// The generations this keyring opens.
    pub fn generations(&self) -> Vec<u32> {
        self.keys.iter().map(|(g, _)| *g).collect()
    }

    /// Seals under the newest key, naming its generation.
    pub fn seal(&self, name: &str, plain: &[u8], compress: bool) -> Result<Vec<u8>, Error> {
        let (generation, key) = &self.keys[0];
        key.seal_as(Some(*generation), name, plain, compress)
    }

    /// The generation that sealed an object, from its header alone (no key needed).
    pub fn generation_of(sealed: &[u8]) -> Option<u32> {
        match sealed.get(..4)? {
            m if m == MAGIC => Some(1),
            m if m == MAGIC_V2 => Some(u32::from_be_bytes(sealed.get(5..9)?.try_into().ok()?)),
            _ => None,
        }
    }

    /// Opens an object sealed under the same name by any generation this keyring holds.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        self.open_vec(name, sealed.to_vec())
    }

    /// [`Keyring::open`], decrypting in place in the buffer it is given (no copy of the
    /// sealed bytes; the plain bytes reuse it unless they were compressed).
    pub fn open_vec(&self, name: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>, Error> {
        let (compressed, plain) = self.decrypt(name, &mut sealed)?;
        if compressed {
            lz4_flex::block::decompress_size_prepended(&sealed[plain]).map_err(|e| corrupt(name, &format!("lz4: {e}")))
        } else {
            sealed.truncate(plain.end);
            sealed.drain(..plain.start);
            Ok(sealed)
        }
    }

    /// [`Keyring::open`] into `out`, at an offset aligned to `align` bytes (for direct
    /// I/O), growing `out` when it is too small; returns where the plain bytes are. A plain
    /// size above `max` is refused before anything is decoded.
    pub fn open_aligned(
        &self,
        name: &str,
        mut sealed: Vec<u8>,
        out: &mut Vec<u8>,
        align: usize,
        max: usize,
    ) -> Result<std::ops::Range<usize>, Error> {
        let (compressed, plain) = self.decrypt(name, &mut sealed)?;
        let body = &sealed[plain];
        let (size, payload) = if compressed {
            let prefix: [u8; 4] = body
                .get(..4)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| corrupt(name, "lz4: no size"))?;
            (u32::from_le_bytes(prefix) as usize, &body[4..])
        } else {
            (body.len(), body)
        };
        if size > max {
            return Err(corrupt(name, &format!("holds {size} bytes, more than {max}")));
        }
        if out.len() < size + align {
            out.resize(size + align, 0);
        }
        let off = out.as_ptr().align_offset(align);
        let dst = &mut out[off..off + size];
        if compressed {
            let n = lz4_flex::block::decompress_into(payload, dst).map_err(|e| corrupt(name, &format!("lz4: {e}")))?;
            if n != size {
                return Err(corrupt(name, "lz4: shorter than its size"));
            }
        } else {
            dst.copy_from_slice(payload);
        }
        Ok(off..off + size)
    }

    /// Authenticates and decrypts `sealed` in place with the key of the generation its
    /// header names: whether the plain bytes are LZ4, and where they are in the buffer.
    fn decrypt(&self, name: &str, sealed: &mut [u8]) -> Result<(bool, std::ops::Range<usize>), Error> {
        let header = match sealed.get(..4) {
            Some(m) if m == MAGIC => HEADER,
            Some(m) if m == MAGIC_V2 => HEADER_V2,
            _ => 0,
        };
        if header == 0 || sealed.len() < header + 16 {
            return Err(corrupt(name, "not a sealed Highrise object (bad header)"));
        }
        let generation = Self::generation_of(sealed).ok_or_else(|| corrupt(name, "bad header"))?;
        let flags = sealed[4];
        let nonce: [u8; NONCE_LEN] = sealed[header - NONCE_LEN..header]
            .try_into()
            .map_err(|_| corrupt(name, "bad nonce"))?;
        let Some((_, key)) = self.keys.iter().find(|(g, _)| *g == generation) else {
            return Err(Error::Crypto(format!(
                "{name} is sealed with data key generation {generation}, which is gone (retired or destroyed); this keyring holds {:?}",
                self.generations()
            )));
        };
        let plain = key.decrypt_body(name, sealed, header, nonce)?;
        Ok((flags & FLAG_LZ4 != 0, plain))
    }
}

fn corrupt(name: &str, reason: &str) -> Error {
    Error::Corrupt {
        object: name.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_compression() {
        let k = Key::generate().unwrap();
        let data = b"hello hello hello hello hello hello hello hello".repeat(100);
        for compress in [false, true] {
            let s = k.seal("a/b", &data, compress).unwrap();
            assert_eq!(k.open("a/b", &s).unwrap(), data);
            let ring = Keyring::from(k.clone());
            let s = ring.seal("a/b", &data, compress).unwrap();
            assert_eq!(ring.open("a/b", &s).unwrap(), data);
            let mut out = Vec::new();
            let r = ring.open_aligned("a/b", s.clone(), &mut out, 4096, data.len()).unwrap();
            assert_eq!((out[r.clone()].as_ptr() as usize % 4096, &out[r]), (0, &data[..]));
            assert!(ring
                .open_aligned("a/b", s.clone(), &mut out, 4096, data.len() - 1)
                .is_err());
            if compress {
                assert!(s.len() < data.len() / 4, "compressible data shrinks");
            }
        }
        // Incompressible data is stored as is, still sealed.
        let s = k.seal("x", b"\x01\x02", true).unwrap();
        assert_eq!(k.open("x", &s).unwrap(), b"\x01\x02");
    }

    #[test]
    fn wrong_key_name_or_damage_is_refused() {
        let (k, other) = (Key::generate().unwrap(), Key::generate().unwrap());
        let s = k.seal("t1/wal/1", b"secret rows", true).unwrap();
        assert!(matches!(other.open("t1/wal/1", &s), Err(Error::Corrupt { .. })));
        assert!(matches!(k.open("t2/wal/1", &s), Err(Error::Corrupt { .. })));
        let mut bad = s.clone();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        assert!(matches!(k.open("t1/wal/1", &bad), Err(Error::Corrupt { .. })));
        assert!(matches!(k.open("t1/wal/1", b"junk"), Err(Error::Corrupt { .. })));
        assert!(!s.windows(11).any(|w| w == b"secret rows"), "ciphertext hides the rows");
    }

    #[test]
    fn wrapped_keys_are_bound_to_their_org() {
        let (master, data) = (Key::generate().unwrap(), Key::generate().unwrap());
        let w = master.wrap(&data, "org-a").unwrap();
        assert_eq!(master.unwrap_key(&w, "org-a").unwrap().to_hex(), data.to_hex());
        assert!(master.unwrap_key(&w, "org-b").is_err());
        assert!(Key::generate().unwrap().unwrap_key(&w, "org-a").is_err());
    }

    #[test]
    fn rotated_keys_open_what_they_sealed_and_a_gone_generation_opens_nothing() {
        let (k1, k2, k3) = (
            Key::generate().unwrap(),
            Key::generate().unwrap(),
            Key::generate().unwrap(),
        );
        // Before any rotation: the single key's objects (HRS1, and HRS2 generation 1).
        let legacy = k1.seal("o/c/wal/1", b"old rows", true).unwrap();
        let first = Keyring::from(k1.clone());
        let sealed1 = first.seal("o/c/wal/2", b"rows 2", true).unwrap();
        assert_eq!(Keyring::generation_of(&legacy), Some(1));
        assert_eq!(Keyring::generation_of(&sealed1), Some(1));
        // Rotated: generation 2 seals, 1 still opens.
        let ring = Keyring::new(vec![(1, k1.clone()), (2, k2.clone())]).unwrap();
        assert_eq!(ring.current(), 2);
        let sealed2 = ring.seal("o/c/wal/3", b"rows 3", true).unwrap();
        assert_eq!(Keyring::generation_of(&sealed2), Some(2));
        assert_eq!(ring.open("o/c/wal/1", &legacy).unwrap(), b"old rows");
        assert_eq!(ring.open("o/c/wal/2", &sealed1).unwrap(), b"rows 2");
        assert_eq!(ring.open("o/c/wal/3", &sealed2).unwrap(), b"rows 3");
        // Generation 1 retired: its objects no longer open, and say why.
        let retired = Keyring::new(vec![(2, k2.clone())]).unwrap();
        let e = retired.open("o/c/wal/2", &sealed1).unwrap_err().to_string();
        assert!(e.contains("generation 1, which is gone"), "{e}");
        assert_eq!(retired.open("o/c/wal/3", &sealed2).unwrap(), b"rows 3");
        // A forged generation number points at a key that does not open the object.
        let mut forged = sealed2.clone();
        forged[5..9].copy_from_slice(&3u32.to_be_bytes());
        let other = Keyring::new(vec![(2, k2), (3, k3)]).unwrap();
        assert!(matches!(other.open("o/c/wal/3", &forged), Err(Error::Corrupt { .. })));
        assert!(Keyring::new(vec![]).is_err());
        assert!(Keyring::new(vec![(1, k1.clone()), (1, k1)]).is_err());
    }
}

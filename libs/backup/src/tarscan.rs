//! Watches a tar stream go by and keeps two members of it: `backup_label` (where the
//! backup's WAL starts) and `backup_manifest` (PostgreSQL's manifest, which
//! `pg_basebackup` appends when it writes to stdout; it says where the WAL ends).

const BLOCK: usize = 512;
const KEEP: [&str; 2] = ["backup_label", "backup_manifest"];
const KEEP_MAX: u64 = 256 * 1024 * 1024;

#[derive(Default)]
pub struct TarScan {
    header: Vec<u8>,
    /// Bytes of the current member's data still to come, and padding after it.
    data_left: u64,
    pad_left: u64,
    capture: Option<(String, Vec<u8>)>,
    pub found: Vec<(String, Vec<u8>)>,
    pub bad: Option<String>,
}

impl TarScan {
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && self.bad.is_none() {
            if self.data_left > 0 {
                let n = buf.len().min(self.data_left as usize);
                if let Some((_, v)) = &mut self.capture {
                    v.extend_from_slice(&buf[..n]);
                }
                self.data_left -= n as u64;
                buf = &buf[n..];
                if self.data_left == 0 {
                    if let Some(c) = self.capture.take() {
                        self.found.push(c);
                    }
                }
            } else if self.pad_left > 0 {
                let n = buf.len().min(self.pad_left as usize);
                self.pad_left -= n as u64;
                buf = &buf[n..];
            } else {
                let n = buf.len().min(BLOCK - self.header.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() == BLOCK {
                    let h = std::mem::take(&mut self.header);
                    self.on_header(&h);
                }
            }
        }
    }

    fn on_header(&mut self, h: &[u8]) {
        if h.iter().all(|&b| b == 0) {
            return; // end-of-archive blocks
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).to_string();
        let Some(size) = parse_size(&h[124..136]) else {
            self.bad = Some(format!("tar header of {name:?} has a bad size"));
            return;
        };
        self.data_left = size;
        self.pad_left = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if KEEP.contains(&name.as_str()) && size <= KEEP_MAX {
            if size == 0 {
                self.found.push((name, Vec::new()));
            } else {
                self.capture = Some((name, Vec::with_capacity(size as usize)));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.found.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        // GNU base-256: big-endian binary in the remaining bytes.
        return Some(field[1..].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)));
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_label_and_manifest_across_any_split() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("backup_label", b"START WAL LOCATION: 0/2000028\n".to_vec()),
            ("base/1/123", vec![5u8; 1500]),
            ("backup_manifest", b"{\"x\":1}".to_vec()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        for step in [1, 7, 512, 1000, bytes.len()] {
            let mut s = TarScan::default();
            for c in bytes.chunks(step) {
                s.feed(c);
            }
            assert!(s.bad.is_none());
            assert_eq!(s.get("backup_label").unwrap(), b"START WAL LOCATION: 0/2000028\n");
            assert_eq!(s.get("backup_manifest").unwrap(), b"{\"x\":1}");
            assert!(s.get("base/1/123").is_none());
        }
    }
}

//! Sealing a repository's objects again under a newer data key generation (retiring the
//! older one), on a filesystem store: a backup's parts and then its manifest, whose
//! checksums name the parts as stored. A run stopped between a part and its manifest
//! leaves a backup that fails verification, and the next run finishes it.

use highrise_backup::base::{Manifest, Part};
use highrise_backup::{Key, Keyring, Location, Repo};

fn location(dir: &std::path::Path) -> Location {
    Location {
        url: format!("file://{}", dir.display()),
        options: Default::default(),
        prefix: "org_a/cl_a".into(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

#[tokio::test]
async fn an_interrupted_reseal_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let stored = |rel: &str| std::fs::read(dir.path().join("org_a/cl_a").join(rel)).unwrap();
    let (k1, k2) = (Key::generate().unwrap(), Key::generate().unwrap());
    let old = Repo::open(&location(dir.path()), k1.clone()).unwrap();

    // A backup of two parts under generation 1, and a WAL history file.
    let mut parts = Vec::new();
    for (n, body) in [&b"first part of the copy"[..], b"second part"].iter().enumerate() {
        let name = format!("base/b1/part-{n:06}");
        old.put(&name, body, true).await.unwrap();
        let sealed = stored(&name);
        parts.push(Part {
            name,
            size: body.len() as u64,
            stored: sealed.len() as u64,
            sha256: sha256_hex(&sealed),
            chunks: Vec::new(),
        });
    }
    let manifest = Manifest {
        id: "b1".into(),
        timeline: 1,
        start_lsn: 0,
        end_lsn: 9,
        started_at: 1,
        finished_at: 2,
        size: parts.iter().map(|p| p.size).sum(),
        stored: parts.iter().map(|p| p.stored).sum(),
        compression: "lz4".into(),
        parts,
        format: "tar".into(),
        dirs: Vec::new(),
        files: Vec::new(),
        label: None,
    };
    old.put_manifest(&manifest).await.unwrap();
    old.put_wal(1, 1, 0, b"wal bytes").await.unwrap();
    old.put_history(2, b"1\t0/3000000\tno recovery target\n").await.unwrap();
    old.verify_base("b1").await.unwrap();

    let new = Repo::open(
        &location(dir.path()),
        Keyring::new(vec![(2, k2.clone()), (1, k1)]).unwrap(),
    )
    .unwrap();
    // Stopped after the first part: the manifest's checksum no longer matches it.
    assert_eq!(new.reseal("base/b1/part-000000").await.unwrap(), Some(1));
    assert_eq!(new.reseal("base/b1/part-000000").await.unwrap(), None, "already new");
    let err = new.verify_base("b1").await.unwrap_err().to_string();
    assert!(err.contains("checksum does not match"), "{err}");

    // The next run finishes: both parts and the manifest under generation 2.
    assert_eq!(
        new.reseal_backup("b1").await.unwrap(),
        2,
        "the second part and the manifest"
    );
    let wal = new.list("wal").await.unwrap();
    assert_eq!(wal.len(), 2, "a chunk and a history file: {wal:?}");
    for (rel, _) in &wal {
        assert_eq!(new.reseal(rel).await.unwrap(), Some(1), "{rel}");
    }
    for (rel, _) in new.list("base").await.unwrap().into_iter().chain(wal) {
        assert_eq!(Keyring::generation_of(&stored(&rel)), Some(2), "{rel}");
    }
    // Only generation 2 is needed now: the older key can go.
    let only_new = Repo::open(&location(dir.path()), Keyring::new(vec![(2, k2)]).unwrap()).unwrap();
    only_new.verify_base("b1").await.unwrap();
    assert_eq!(only_new.get("base/b1/part-000001").await.unwrap(), b"second part");
    assert_eq!(only_new.reseal_backup("b1").await.unwrap(), 0, "nothing left to do");
}

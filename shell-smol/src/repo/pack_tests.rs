//! Packs of version 2: compressed objects, deltas and their chains, damage,
//! and version-1 packs read as they are.

use super::*;

/// An empty store in a temporary directory (also used by `received.rs`'s tests).
pub(super) fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(d.path().join("objects")).expect("mkdir");
    let s = Store::open(&d.path().join("objects"), &d.path().join("tmp")).expect("open");
    (d, s)
}

fn version(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..3000 {
        s.push_str(&format!("line {i}: the same text every version\n"));
        if i % 500 == 0 {
            s.push_str(&format!("edit {n} near line {i}\n"));
        }
    }
    s.into_bytes()
}

fn loc(s: &Store, id: &ObjectId) -> Loc {
    *s.index.get(id).expect("stored")
}

#[test]
fn compressible_objects_are_stored_zstd_and_read_back_exactly() {
    let (_d, mut s) = store();
    let data = version(0);
    let mut w = s.writer().expect("writer");
    let id = w.add_blob(&data).expect("add");
    let tiny = w.add_blob(b"tiny").expect("add");
    s.commit(w).expect("commit");
    let l = loc(&s, &id);
    assert_eq!(l.codec, Codec::Zstd);
    assert!((l.len as usize) * 4 < data.len(), "{} stored", l.len);
    assert_eq!(&s.read_raw(&id).expect("read")[1..], &data[..]);
    assert_eq!(loc(&s, &tiny).codec, Codec::Raw);
    assert_eq!(s.file_content(&tiny).expect("read"), b"tiny");
    let (mut problems, mut bad) = (Vec::new(), HashSet::new());
    s.verify_all(&mut problems, &mut bad);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn delta_chains_stop_at_the_depth_limit_and_every_version_reads_back() {
    let (_d, mut s) = store();
    let mut ids = Vec::new();
    let mut prev: Option<ObjectId> = None;
    for n in 0..(2 * MAX_CHAIN + 3) {
        let mut w = s.writer().expect("writer");
        let base = prev.and_then(|p| s.offer_base(&p));
        let id = w
            .add_blob_with_base(&version(n), base.as_ref())
            .expect("add");
        s.commit(w).expect("commit");
        ids.push(id);
        prev = Some(id);
    }
    let depths: Vec<usize> = ids.iter().map(|id| s.delta_depth(id)).collect();
    assert!(depths.iter().all(|&d| d <= MAX_CHAIN), "{depths:?}");
    assert_eq!(depths[MAX_CHAIN], MAX_CHAIN, "{depths:?}");
    assert_eq!(
        depths[MAX_CHAIN + 1],
        0,
        "a base at the limit is not used: {depths:?}"
    );
    assert_eq!(depths[MAX_CHAIN + 2], 1, "{depths:?}");
    assert!(s.offer_base(&ids[MAX_CHAIN]).is_none());
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(s.file_content(id).expect("read"), version(n));
    }
    // A fresh store (empty cache) reads the deepest version too.
    let s2 = Store::open(&s.dir, &s.tmp).expect("reopen");
    assert_eq!(
        s2.file_content(&ids[MAX_CHAIN]).expect("read"),
        version(MAX_CHAIN)
    );
    let deltas = ids
        .iter()
        .filter(|id| loc(&s, id).codec == Codec::Delta)
        .count();
    assert!(deltas >= 2 * MAX_CHAIN, "{deltas} deltas");
}

#[test]
fn a_delta_whose_base_is_gone_is_a_clear_error() {
    let (_d, mut s) = store();
    let mut w = s.writer().expect("writer");
    let a = w.add_blob(&version(0)).expect("add");
    s.commit(w).expect("commit");
    let base_pack = s.pack_paths()[0].clone();
    let mut w = s.writer().expect("writer");
    let b = w
        .add_blob_with_base(&version(1), s.offer_base(&a).as_ref())
        .expect("add");
    s.commit(w).expect("commit");
    assert_eq!(loc(&s, &b).codec, Codec::Delta);
    fs::remove_file(&base_pack).expect("remove base pack");
    s.refresh().expect("refresh");
    let e = match s.read_raw(&b) {
        Ok(_) => panic!("read a delta whose base is gone"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("delta base") && e.contains("not in the store"),
        "{e}"
    );
}

#[test]
fn a_delta_needs_its_base_for_the_closure_check() {
    let (_d, mut s) = store();
    let mut w = s.writer().expect("writer");
    let a = w.add_blob(&version(0)).expect("add");
    s.commit(w).expect("commit");
    let base = s.offer_base(&a).expect("base");
    // A second store without the base refuses the delta batch.
    let (_d2, mut other) = store();
    let mut w = other.writer().expect("writer");
    w.add_blob_with_base(&version(1), Some(&base)).expect("add");
    assert!(matches!(other.commit(w), Err(RepoError::Closure { .. })));
}

#[test]
fn corrupt_compressed_bytes_are_a_clean_error() {
    let (_d, mut s) = store();
    let mut w = s.writer().expect("writer");
    let id = w.add_blob(&version(0)).expect("add");
    s.commit(w).expect("commit");
    let l = loc(&s, &id);
    let path = s.pack_paths()[0].clone();
    let mut bytes = fs::read(&path).expect("read pack");
    let mid = (l.offset + u64::from(l.len) / 2) as usize;
    bytes[mid] ^= 0x5a;
    bytes[mid + 1] ^= 0xa5;
    fs::write(&path, bytes).expect("write pack");
    let s = Store::open(&s.dir, &s.tmp).expect("reopen");
    let e = match s.read_raw(&id) {
        Ok(_) => panic!("read damaged bytes"),
        Err(e) => e,
    };
    assert!(matches!(e, RepoError::CorruptObject { .. }), "{e}");
}

#[test]
fn version_1_packs_are_read_and_verified() {
    let (d, _) = store();
    let blob = {
        let mut v = vec![ObjectKind::Blob as u8];
        v.extend_from_slice(b"old format content\n");
        v
    };
    let id = ObjectId::hash(&blob);
    let path = d.path().join("objects/pack-v1.ivp");
    write_v1_pack(&path, &[(id, blob.clone())]).expect("write v1");
    check_pack(&path).expect("whole");
    let s = Store::open(&d.path().join("objects"), &d.path().join("tmp")).expect("open");
    assert_eq!(s.read_raw(&id).expect("read"), blob);
    let (mut problems, mut bad) = (Vec::new(), HashSet::new());
    assert_eq!(s.verify_all(&mut problems, &mut bad), 1);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn random_data_is_stored_raw() {
    let (_d, mut s) = store();
    let mut x = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut w = s.writer().expect("writer");
    let id = w.add_blob(&data).expect("add");
    s.commit(w).expect("commit");
    assert_eq!(loc(&s, &id).codec, Codec::Raw);
    assert_eq!(s.file_content(&id).expect("read"), data);
}

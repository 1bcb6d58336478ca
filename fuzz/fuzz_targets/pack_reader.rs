//! Feeds damaged pack files to the pack reader.
//!
//! The first byte picks the mode: even, the rest is one pack file as it is;
//! odd, the rest seeds two valid version-2 packs (a compressible blob, then a
//! delta of it against the first), and its last three bytes flip one byte of
//! one of them, so the reader meets packs that are almost right. Opening a
//! store over them, reading every object, verifying and salvaging must never
//! panic, and every read that succeeds returns exactly the bytes whose hash is
//! the id (allocations are bounded by the declared lengths, which the reader
//! caps at the object size limit).
#![no_main]

use std::path::Path;

use hashbrown::{HashMap, HashSet};
use ivaldi_core::ObjectId;
use ivaldi_shell_smol::repo::Store;
use ivaldi_shell_smol::repo::pack::{self, MAX_OBJECT};
use libfuzzer_sys::fuzz_target;

/// Two valid packs: blob `a`, then blob `b` offered `a` as its delta base.
fn valid_packs(dir: &Path, seed: &[u8]) -> Vec<Vec<u8>> {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).expect("mkdir");
    let mut store = Store::open(&objects, &dir.join("tmp")).expect("open");
    let half = seed.len() / 2;
    let a = seed[..half].repeat(8);
    let mut b = a.clone();
    b.extend_from_slice(&seed[half..]);
    let mut w = store.writer().expect("writer");
    let a_id = w.add_blob(&a).expect("add a");
    store.commit(w).expect("commit a");
    let mut w = store.writer().expect("writer");
    w.set_path_bases(HashMap::from([("f".to_owned(), a_id)]));
    w.add_blob_at("f", &b, &store).expect("add b");
    store.commit(w).expect("commit b");
    store
        .pack_paths()
        .iter()
        .map(|p| std::fs::read(p).expect("read pack"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let files = if mode & 1 == 0 {
        vec![rest.to_vec()]
    } else if rest.len() >= 3 {
        let (seed, flip) = rest.split_at(rest.len() - 3);
        let mut packs = valid_packs(&dir.path().join("build"), seed);
        let which = usize::from(flip[0]) % packs.len();
        let p = &mut packs[which];
        if !p.is_empty() {
            let pos = (usize::from(flip[1]) << 8 | usize::from(mode >> 1)) % p.len();
            p[pos] ^= flip[2];
        }
        packs
    } else {
        return;
    };
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).expect("mkdir");
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(objects.join(format!("pack-{i}.ivp")), bytes).expect("write pack");
    }
    let Ok(store) = Store::open(&objects, &dir.path().join("tmp")) else {
        return;
    };
    let ids: Vec<ObjectId> = store.ids().copied().collect();
    for id in &ids {
        if let Ok(raw) = store.read_raw(id) {
            assert!(raw.len() <= MAX_OBJECT);
            assert_eq!(ObjectId::hash(&raw), *id);
        }
        let _ = store.delta_depth(id);
        let _ = store.offer_base(id);
    }
    let (mut problems, mut bad) = (Vec::new(), HashSet::new());
    store.verify_all(&mut problems, &mut bad);
    for path in store.pack_paths() {
        let _ = pack::check_pack(&path);
        let _ = pack::is_v1(&path);
        let _ = pack::for_each_intact(&path, &store, |id, bytes| {
            assert_eq!(ObjectId::hash(bytes), id);
            Ok(())
        });
    }
});

//! Feeds arbitrary bytes to every object decoder.
//!
//! Ids are hashes of encodings, so an object must have exactly one encoding: any
//! input a decoder accepts has to re-encode to the very same bytes, and must pass
//! `object::verify` under its own hash (what every received object goes through).
#![no_main]

use ivaldi_core::ObjectId;
use ivaldi_core::object::{self, ChunkList, Object, Seal, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Object::decode(data);
    if let Ok(obj) = &decoded {
        let encoded = obj.encode().expect("a decoded object re-encodes");
        assert_eq!(encoded, data, "decoded object is not canonical");
        let kind = object::verify(&ObjectId::hash(data), data).expect("decoded object verifies");
        assert_eq!(kind, obj.kind());
    } else {
        assert!(
            object::verify(&ObjectId::hash(data), data).is_err(),
            "verify accepted bytes Object::decode rejects"
        );
    }
    if let Ok(tree) = Tree::decode(data) {
        assert_eq!(tree.encode(), data, "tree is not canonical");
        assert_eq!(tree.id(), ObjectId::hash(data));
        assert_eq!(decoded, Ok(Object::Tree(tree)));
    }
    if let Ok(seal) = Seal::decode(data) {
        assert_eq!(
            seal.encode().expect("a decoded seal re-encodes"),
            data,
            "seal is not canonical"
        );
        assert_eq!(decoded, Ok(Object::Seal(seal)));
    }
    if let Ok(list) = ChunkList::decode(data) {
        assert_eq!(list.encode(), data, "chunk list is not canonical");
        assert_eq!(decoded, Ok(Object::ChunkList(list)));
    }
});

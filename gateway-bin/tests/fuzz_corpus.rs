//! Every file of the committed fuzz corpus (`fuzz/corpus/<target>/`) runs
//! through its target's checks on the stable toolchain: an input that once
//! crashed a parser stays a regression test.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut targets = 0;
    let mut inputs = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap();
        let target = dir.file_name().into_string().unwrap();
        targets += 1;
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let ran = std::panic::catch_unwind(|| switchboard::fuzzing::run(&target, &data));
            match ran {
                Ok(true) => inputs += 1,
                Ok(false) => panic!("{} names no fuzz target", dir.path().display()),
                Err(_) => panic!("{} crashed target {target}", path.display()),
            }
        }
    }
    assert_eq!(targets, 6, "one corpus directory per fuzz target");
    assert!(inputs >= targets, "every target has a seed input");
}

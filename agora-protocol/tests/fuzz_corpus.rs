//! Replays every input that fuzzing saved (`fuzz/corpus/decode`), and every crash it
//! found (`fuzz/regressions`), through the same checks as the fuzz target, so the
//! ordinary test suite keeps what fuzzing learned.

use std::path::Path;

#[test]
fn replay_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus/decode", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| agora_protocol::testing::check_decode(&data));
            assert!(r.is_ok(), "fuzz input {} fails", path.display());
            n += 1;
        }
    }
    assert!(n >= 10, "expected the seed corpus, found {n} inputs");
}

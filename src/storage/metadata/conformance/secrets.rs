//! Shared secrets: the first bytes stored for a name win, for every caller.

use super::*;

/// The first value stored stays, byte for byte, and every later (or concurrent) caller gets it
/// back; names are independent.
pub(super) fn the_first_secret_wins(m: &dyn MetadataStore) {
    let first: Vec<u8> = vec![0, 1, 0xfe, 0xff, b'\n', 0];
    assert_eq!(ok(m.secret_or_insert("signing-key", &first)), first);
    assert_eq!(ok(m.secret_or_insert("signing-key", b"second")), first);
    assert_eq!(ok(m.secret_or_insert("Signing-Key", b"other")), b"other");
    assert_eq!(ok(m.secret_or_insert("empty", b"")), b"");
    assert_eq!(ok(m.secret_or_insert("empty", b"late")), b"");

    let got: Vec<Vec<u8>> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..4u8)
            .map(|i| s.spawn(move || ok(m.secret_or_insert("raced", &[i; 16]))))
            .collect();
        callers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("a caller panicked")))
            .collect()
    });
    assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
    assert_eq!(ok(m.secret_or_insert("raced", b"after")), got[0]);
}

//! What an RTMP client sends (handshake, chunks, AMF0 commands, media) through the calls an edge
//! connection makes. A panic inside rml_rtmp is contained by the edge and ends only that
//! connection, so it is not a finding here: libfuzzer-sys's panic hook (which aborts at once,
//! before catch_unwind could run) is replaced, and each new place such a panic comes from is
//! printed, for reporting upstream. Any panic the edge does not contain is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fuzz_target!(
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
        for panic in onda_edge::fuzz::fuzz_connection(data) {
            let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let place = panic.rsplit(" at ").next().unwrap_or_default().to_string();
            if seen.get_or_insert_with(HashSet::new).insert(place) {
                eprintln!("contained panic in {panic}");
            }
        }
    }
);

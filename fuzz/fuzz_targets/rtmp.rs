//! What an RTMP client sends (handshake, chunks, AMF0 commands, media) through the calls an edge
//! connection makes. A panic inside rml_rtmp is contained by the edge and ends only that
//! connection, so it is not a finding here: the default panic hook (libfuzzer-sys's aborts at
//! once, before catch_unwind could run) is replaced by one that prints each new place such a
//! panic comes from, for reporting upstream. Any panic the edge does not contain is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fuzz_target!(
    init: {
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.get_or_insert_with(HashSet::new).insert(place.clone()) {
                eprintln!("contained panic at {place}: {info}");
            }
        }));
    },
    |data: &[u8]| {
        let _ = onda_edge::live::rtmp::fuzz_connection(data);
    }
);

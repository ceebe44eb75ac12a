//! What an RTMP client sends (handshake, chunks, AMF0 commands, media) through the calls an edge
//! connection makes. A panic inside rml_rtmp is contained by the edge and ends only that
//! connection, so it is not a finding here (the default panic hook is put back so the containment
//! works as in the server); any other panic is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic from its hook, before catch_unwind could run.
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let _ = onda_edge::live::rtmp::fuzz_connection(data);
    }
);

//! What a client sends before authentication, and what the server answers during
//! start-up, through the harness the bounded test run uses (`highrise_proxy::fuzzing`).
#![no_main]

use highrise_proxy::fuzzing::{conversation, server_messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options: TLS offered, an SNI name, where to split.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    conversation(rest, flags & 1 == 1, (flags & 2 == 2).then_some("ep-abc.db.example"));
    server_messages(rest, usize::from(flags >> 2) * 8);
});

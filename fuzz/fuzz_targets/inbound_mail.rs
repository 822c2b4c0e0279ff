#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_bridge::fuzzing::inbound_mail(data));

#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_bridge::fuzzing::outbound_mail(data));

//! Fuzzes the `model.mil` parser: no input may panic, and every program that parses must print and parse back to
//! the same program (compared through `Debug`, so NaN payloads compare equal).

#![no_main]

use candle_coreml_format::mil::text::{parse_program, print_program};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(program) = parse_program(text) else {
        return;
    };
    let printed = match print_program(&program) {
        Ok(printed) => printed,
        Err(e) => panic!("a parsed program must print: {e}"),
    };
    let reparsed = match parse_program(&printed) {
        Ok(reparsed) => reparsed,
        Err(e) => panic!("printed text must parse: {e}\n{printed}"),
    };
    assert_eq!(format!("{reparsed:?}"), format!("{program:?}"), "round trip changed the program");
});

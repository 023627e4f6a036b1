//! Fuzzes the MILBlob v2 reader: any file contents must give values or errors, never a panic.

#![no_main]

use candle_coreml_format::blob::WeightFile;
use candle_coreml_format::mil::DataType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader maps files, so each input is written to a per-process scratch file first.
    let path = std::env::temp_dir().join(format!("candle-coreml-fuzz-blob-{}.bin", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(file) = WeightFile::open(&path) else {
        return;
    };
    let _ = file.record_offsets();
    for offset in (0..file.len().saturating_add(64)).step_by(64) {
        let Ok(blob) = file.blob(offset) else {
            continue;
        };
        let _ = blob.element_count();
        let _ = match blob.dtype {
            DataType::Float16 => blob.as_f16().map(|v| v.len()),
            DataType::BFloat16 => blob.as_bf16().map(|v| v.len()),
            DataType::Float32 => blob.as_f32().map(|v| v.len()),
            DataType::Int8 => blob.as_i8().map(|v| v.len()),
            DataType::Int16 => blob.as_i16().map(|v| v.len()),
            DataType::UInt16 => blob.as_u16().map(|v| v.len()),
            DataType::Int32 => blob.as_i32().map(|v| v.len()),
            DataType::UInt32 => blob.as_u32().map(|v| v.len()),
            DataType::Int4 => blob.unpack_int4().map(|v| v.len()),
            _ => blob.unpack_unsigned().map(|v| v.len()),
        };
    }
});

//! The MILBlob v2 reader on weight files written by hand, with packed values computed by hand.

use std::path::Path;

use candle_coreml_format::blob::{WeightFile, WeightStore};
use candle_coreml_format::mil::{BlobRef, DataType};
use candle_coreml_format::FormatError;
use half::f16;

/// Appends a 64-byte metadata record at the next 64-byte boundary followed by `data` (at the next boundary too).
fn push_blob(file: &mut Vec<u8>, dtype_code: u32, data: &[u8], padding_bits: u64) -> u64 {
    file.resize(file.len().next_multiple_of(64), 0);
    let record = file.len() as u64;
    let data_offset = record + 64;
    file.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    file.extend_from_slice(&dtype_code.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(&data_offset.to_le_bytes());
    file.extend_from_slice(&padding_bits.to_le_bytes());
    file.resize(data_offset as usize, 0);
    file.extend_from_slice(data);
    record
}

fn header(count: u32) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(&count.to_le_bytes());
    file.extend_from_slice(&2u32.to_le_bytes());
    file.resize(64, 0);
    file
}

struct Sample {
    file: Vec<u8>,
    fp16: u64,
    uint3: u64,
    uint6: u64,
    int4: u64,
    int32: u64,
}

fn sample() -> Sample {
    let mut file = header(5);
    let fp16: Vec<u8> = [1.0f32, -2.0, 0.5]
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let fp16 = push_blob(&mut file, 1, &fp16, 0);
    // uint3 [1, 7, 2, 5, 3], LSB first: bits 0-2 = 001, 3-5 = 111, 6-8 = 010, 9-11 = 101, 12-14 = 011.
    let uint3 = push_blob(&mut file, 12, &[0xB9, 0x3A], 1);
    // uint6 [63, 0, 21, 42]: byte0 = 0x3F, byte1 = 0x50 (bits 12 and 14), byte2 = 0xA9.
    let uint6 = push_blob(&mut file, 13, &[0x3F, 0x50, 0xA9], 0);
    // int4 [-8, 7, -1]: nibbles 0x8, 0x7, 0xF.
    let int4 = push_blob(&mut file, 8, &[0x78, 0x0F], 4);
    let i32s: Vec<u8> = [1i32, -2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let int32 = push_blob(&mut file, 14, &i32s, 0);
    Sample {
        file,
        fp16,
        uint3,
        uint6,
        int4,
        int32,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn decodes_hand_written_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let path = write(dir.path(), "weight.bin", &s.file);
    let w = WeightFile::open(&path).unwrap();
    assert_eq!(w.blob_count(), 5);
    assert_eq!(
        w.record_offsets().unwrap(),
        vec![s.fp16, s.uint3, s.uint6, s.int4, s.int32]
    );

    let b = w.blob(s.fp16).unwrap();
    assert_eq!(b.dtype, DataType::Float16);
    assert_eq!(b.element_count(), 3);
    let v: Vec<f32> = b.as_f16().unwrap().iter().map(|x| x.to_f32()).collect();
    assert_eq!(v, [1.0, -2.0, 0.5]);
    assert!(b.as_f32().is_err());
    assert!(b.unpack_unsigned().is_err());

    let b = w.blob(s.uint3).unwrap();
    assert_eq!((b.dtype, b.element_count()), (DataType::UInt3, 5));
    assert_eq!(b.unpack_unsigned().unwrap(), [1, 7, 2, 5, 3]);

    let b = w.blob(s.uint6).unwrap();
    assert_eq!((b.dtype, b.element_count()), (DataType::UInt6, 4));
    assert_eq!(b.unpack_unsigned().unwrap(), [63, 0, 21, 42]);

    let b = w.blob(s.int4).unwrap();
    assert_eq!((b.dtype, b.element_count()), (DataType::Int4, 3));
    assert_eq!(b.unpack_int4().unwrap(), [-8, 7, -1]);
    assert!(b.unpack_unsigned().is_err());

    let b = w.blob(s.int32).unwrap();
    assert_eq!(b.as_i32().unwrap(), [1, -2]);
    assert!(b.as_u32().is_err());
}

fn blob_error(e: FormatError) -> (std::path::PathBuf, u64, String) {
    match e {
        FormatError::Blob {
            path,
            offset,
            message,
        } => (path, offset, message),
        other => panic!("expected a blob error, got {other}"),
    }
}

#[test]
fn bad_records_are_errors_naming_path_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();

    let path = write(dir.path(), "ok.bin", &s.file);
    let w = WeightFile::open(&path).unwrap();
    for offset in [0, 65, s.file.len() as u64, u64::MAX - 63, 1 << 40] {
        let (p, o, _) = blob_error(w.blob(offset).unwrap_err());
        assert_eq!((p.as_path(), o), (path.as_path(), offset));
    }

    let mut bad = s.file.clone();
    bad[s.uint6 as usize] ^= 0xFF;
    let path = write(dir.path(), "sentinel.bin", &bad);
    let (p, o, m) = blob_error(WeightFile::open(&path).unwrap().blob(s.uint6).unwrap_err());
    assert_eq!((p, o), (path.clone(), s.uint6));
    assert!(m.contains("sentinel"), "{m}");

    let mut bad = s.file.clone();
    bad[s.uint6 as usize + 4] = 99;
    let path = write(dir.path(), "dtype.bin", &bad);
    let (_, o, m) = blob_error(WeightFile::open(&path).unwrap().blob(s.uint6).unwrap_err());
    assert_eq!(o, s.uint6);
    assert!(m.contains("dtype code 99"), "{m}");

    let mut bad = s.file.clone();
    let size_at = s.int32 as usize + 8;
    bad[size_at..size_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let path = write(dir.path(), "size.bin", &bad);
    let (_, o, m) = blob_error(WeightFile::open(&path).unwrap().blob(s.int32).unwrap_err());
    assert_eq!(o, s.int32);
    assert!(m.contains("outside the file"), "{m}");

    let mut bad = s.file.clone();
    bad[4] = 3;
    let path = write(dir.path(), "version.bin", &bad);
    let (_, o, m) = blob_error(WeightFile::open(&path).unwrap_err());
    assert_eq!(o, 0);
    assert!(m.contains("version 3"), "{m}");

    let path = write(dir.path(), "short.bin", &s.file[..10]);
    assert!(WeightFile::open(&path).is_err());
}

#[test]
fn weight_store_resolves_model_paths_and_the_other_file_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    let s = sample();
    write(&dir.path().join("weights"), "weights.bin", &s.file);
    let program_path = "@model_path/weights/weight.bin".to_string();
    let mut program = candle_coreml_format::mil::Program {
        version: "1".into(),
        functions: Default::default(),
        attributes: Default::default(),
    };
    program.attributes.insert(
        "w".into(),
        candle_coreml_format::mil::Value {
            ty: candle_coreml_format::mil::ValueType::tensor(DataType::UInt6, &[4]),
            data: candle_coreml_format::mil::ValueData::Blob(BlobRef {
                path: program_path.clone(),
                offset: s.uint6,
            }),
        },
    );
    let store = WeightStore::open(dir.path(), &program).unwrap();
    assert_eq!(store.total_bytes(), s.file.len() as u64);
    let blob = store
        .resolve(&BlobRef {
            path: program_path,
            offset: s.uint6,
        })
        .unwrap();
    assert_eq!(blob.unpack_unsigned().unwrap(), [63, 0, 21, 42]);
    let missing = BlobRef {
        path: "@model_path/weights/other.bin".into(),
        offset: 64,
    };
    let (p, o, _) = blob_error(store.resolve(&missing).unwrap_err());
    assert_eq!(o, 64);
    assert!(p.ends_with("weights/other.bin"));

    program.attributes.insert(
        "escape".into(),
        candle_coreml_format::mil::Value {
            ty: candle_coreml_format::mil::ValueType::tensor(DataType::UInt8, &[1]),
            data: candle_coreml_format::mil::ValueData::Blob(BlobRef {
                path: "@model_path/../secret.bin".into(),
                offset: 64,
            }),
        },
    );
    assert!(WeightStore::open(dir.path(), &program).is_err());
}

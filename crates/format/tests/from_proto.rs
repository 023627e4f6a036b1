//! Decoding of protobuf immediate values by declared dtype, with expected values computed by hand.

use std::path::Path;

use candle_coreml_format::mil::from_proto::{
    fp8_e4m3fn_to_f64, fp8_e5m2_to_f64, program_from_proto,
};
use candle_coreml_format::mil::{Program, TensorData, ValueData};
use candle_coreml_format::proto::milspec as pb;
use candle_coreml_format::FormatError;

fn tensor_type(dtype: pb::DataType, dims: &[u64]) -> pb::ValueType {
    pb::ValueType {
        r#type: Some(pb::value_type::Type::TensorType(pb::TensorType {
            data_type: dtype as i32,
            rank: dims.len() as i64,
            dimensions: dims
                .iter()
                .map(|&d| pb::Dimension {
                    dimension: Some(pb::dimension::Dimension::Constant(
                        pb::dimension::ConstantDimension { size: d },
                    )),
                })
                .collect(),
            attributes: Default::default(),
        })),
    }
}

fn immediate(dtype: pb::DataType, dims: &[u64], v: pb::tensor_value::Value) -> pb::Value {
    pb::Value {
        doc_string: String::new(),
        r#type: Some(tensor_type(dtype, dims)),
        value: Some(pb::value::Value::ImmediateValue(
            pb::value::ImmediateValue {
                value: Some(pb::value::immediate_value::Value::Tensor(pb::TensorValue {
                    value: Some(v),
                })),
            },
        )),
    }
}

fn bytes(b: &[u8]) -> pb::tensor_value::Value {
    pb::tensor_value::Value::Bytes(pb::tensor_value::RepeatedBytes { values: b.to_vec() })
}

/// A program with one `main` function whose single `const` op holds `val`.
fn program_with(val: pb::Value) -> pb::Program {
    let name = immediate(
        pb::DataType::String,
        &[],
        pb::tensor_value::Value::Strings(pb::tensor_value::RepeatedStrings {
            values: vec!["c".into()],
        }),
    );
    let ty = val.r#type.clone();
    let op = pb::Operation {
        r#type: "const".into(),
        inputs: Default::default(),
        outputs: vec![pb::NamedValueType {
            name: "c".into(),
            r#type: ty,
        }],
        blocks: vec![],
        attributes: [("name".to_string(), name), ("val".to_string(), val)]
            .into_iter()
            .collect(),
    };
    let block = pb::Block {
        inputs: vec![],
        outputs: vec!["c".into()],
        operations: vec![op],
        attributes: Default::default(),
    };
    let function = pb::Function {
        inputs: vec![],
        opset: "CoreML8".into(),
        block_specializations: [("CoreML8".to_string(), block)].into_iter().collect(),
        attributes: Default::default(),
    };
    pb::Program {
        version: 1,
        functions: [("main".to_string(), function)].into_iter().collect(),
        doc_string: String::new(),
        attributes: Default::default(),
    }
}

fn decode(val: pb::Value) -> Result<TensorData, FormatError> {
    let p: Program = program_from_proto(&program_with(val), Path::new("test.mlmodel"))?;
    assert_eq!(p.version, "1");
    let f = &p.functions["main"];
    assert_eq!(f.opset, "CoreML8");
    match &f.block.operations[0].attributes["val"].data {
        ValueData::Tensor(t) => Ok(t.clone()),
        other => panic!("not a tensor: {other:?}"),
    }
}

#[test]
fn decodes_each_storage_by_declared_dtype() {
    use pb::tensor_value::Value as V;
    // fp16 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800 (little-endian).
    let t = decode(immediate(
        pb::DataType::Float16,
        &[3],
        bytes(&[0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38]),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Float(vec![1.0, -2.0, 0.5]));
    // bf16 1.0 = 0x3F80.
    let t = decode(immediate(
        pb::DataType::Bfloat16,
        &[1],
        bytes(&[0x80, 0x3F]),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Float(vec![1.0]));
    // uint3 [1, 7, 2, 5, 3] packed LSB-first = 0xB9 0x3A.
    let t = decode(immediate(pb::DataType::Uint3, &[5], bytes(&[0xB9, 0x3A]))).unwrap();
    assert_eq!(t, TensorData::Int(vec![1, 7, 2, 5, 3]));
    // int4 [-8, 7, -1] = nibbles 8, 7, F.
    let t = decode(immediate(pb::DataType::Int4, &[3], bytes(&[0x78, 0x0F]))).unwrap();
    assert_eq!(t, TensorData::Int(vec![-8, 7, -1]));
    let t = decode(immediate(pb::DataType::Int8, &[2], bytes(&[0xFF, 0x05]))).unwrap();
    assert_eq!(t, TensorData::Int(vec![-1, 5]));
    let t = decode(immediate(
        pb::DataType::Uint32,
        &[1],
        bytes(&[0xFF, 0xFF, 0xFF, 0xFF]),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Int(vec![4_294_967_295]));
    let t = decode(immediate(
        pb::DataType::Int32,
        &[2],
        V::Ints(pb::tensor_value::RepeatedInts {
            values: vec![-3, 4],
        }),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Int(vec![-3, 4]));
    let t = decode(immediate(
        pb::DataType::Int64,
        &[],
        V::LongInts(pb::tensor_value::RepeatedLongInts {
            values: vec![1 << 40],
        }),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Int(vec![1 << 40]));
    let t = decode(immediate(
        pb::DataType::Float32,
        &[1],
        V::Floats(pb::tensor_value::RepeatedFloats { values: vec![0.25] }),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Float(vec![0.25]));
    let t = decode(immediate(
        pb::DataType::Float64,
        &[1],
        V::Doubles(pb::tensor_value::RepeatedDoubles {
            values: vec![1e-300],
        }),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Float(vec![1e-300]));
    let t = decode(immediate(
        pb::DataType::Bool,
        &[2],
        V::Bools(pb::tensor_value::RepeatedBools {
            values: vec![true, false],
        }),
    ))
    .unwrap();
    assert_eq!(t, TensorData::Bool(vec![true, false]));
}

#[test]
fn fp8_decoding_matches_hand_computed_values() {
    // e4m3fn: 0x38 = 0.0111.000 = 2^(7-7) = 1; 0x01 = smallest subnormal 2^-9; 0x7E = 448 (max); 0x7F = NaN.
    assert_eq!(fp8_e4m3fn_to_f64(0x38), 1.0);
    assert_eq!(fp8_e4m3fn_to_f64(0x01), 2f64.powi(-9));
    assert_eq!(fp8_e4m3fn_to_f64(0x7E), 448.0);
    assert!(fp8_e4m3fn_to_f64(0x7F).is_nan());
    assert_eq!(fp8_e4m3fn_to_f64(0xC0), -2.0);
    // e5m2: 0x3C = 0.01111.00 = 1; 0x7B = 57344 (max); 0x7C = inf; 0x01 = 2^-16.
    assert_eq!(fp8_e5m2_to_f64(0x3C), 1.0);
    assert_eq!(fp8_e5m2_to_f64(0x7B), 57344.0);
    assert_eq!(fp8_e5m2_to_f64(0x7C), f64::INFINITY);
    assert_eq!(fp8_e5m2_to_f64(0x01), 2f64.powi(-16));
}

fn invalid_message(e: FormatError) -> String {
    match e {
        FormatError::Invalid { path, message } => {
            assert_eq!(path, Path::new("test.mlmodel"));
            message
        }
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn mismatches_are_errors_naming_the_op() {
    use pb::tensor_value::Value as V;
    let m = invalid_message(
        decode(immediate(pb::DataType::Float16, &[4], bytes(&[0, 0x3C]))).unwrap_err(),
    );
    assert!(m.contains("`c`") && m.contains("4 elements holds 1"), "{m}");
    let m =
        invalid_message(decode(immediate(pb::DataType::Uint6, &[4], bytes(&[0, 0]))).unwrap_err());
    assert!(m.contains("need 3 bytes"), "{m}");
    let m = invalid_message(
        decode(immediate(
            pb::DataType::Int8,
            &[1],
            V::Ints(pb::tensor_value::RepeatedInts { values: vec![300] }),
        ))
        .unwrap_err(),
    );
    assert!(m.contains("out of range for int8"), "{m}");
    let m = invalid_message(
        decode(immediate(
            pb::DataType::Int32,
            &[1],
            V::Floats(pb::tensor_value::RepeatedFloats { values: vec![1.0] }),
        ))
        .unwrap_err(),
    );
    assert!(m.contains("int32 tensor stored as `floats`"), "{m}");

    let mut p = program_with(immediate(pb::DataType::Int32, &[], bytes(&[0, 0, 0, 0])));
    p.functions.get_mut("main").unwrap().opset = "CoreML9".into();
    let m = invalid_message(program_from_proto(&p, Path::new("test.mlmodel")).unwrap_err());
    assert!(
        m.contains("function `main`") && m.contains("CoreML9"),
        "{m}"
    );
}

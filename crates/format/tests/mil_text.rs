//! Tests of the `model.mil` text parser and printer against the genuine compiled samples in `fixtures/mil-text/`,
//! hand-computed float values, hand-located syntax errors, and a generated corpus of damaged inputs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_coreml_format::mil::text::{parse_program, print_program, MilPrintError};
use candle_coreml_format::mil::{
    Binding, BlobRef, Block, DataType, Dim, Function, NamedType, Operation, Program, TensorData,
    Value, ValueData, ValueType,
};
use candle_coreml_format::MilSyntaxError;

const SAMPLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mil-text");

/// Every sample directory that holds a `model.mil`, sorted.
fn sample_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(SAMPLES_DIR)
        .expect("fixtures/mil-text is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("model.mil").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the mil-text samples, found {}",
        dirs.len()
    );
    dirs
}

fn read_sample(dir: &Path) -> String {
    fs::read_to_string(dir.join("model.mil")).expect("model.mil is UTF-8 text")
}

fn sample(name_part: &str) -> (PathBuf, String) {
    let dir = sample_dirs()
        .into_iter()
        .find(|d| d.to_string_lossy().contains(name_part))
        .expect("sample present");
    let text = read_sample(&dir);
    (dir, text)
}

fn parse_ok(text: &str) -> Program {
    match parse_program(text) {
        Ok(program) => program,
        Err(e) => panic!("parse failed: {e}"),
    }
}

/// Wraps statements in a one-function `program(1.3)` whose `main` takes `tensor<fp32, [2]> x` and returns `names`.
fn program_text(statements: &str, returns: &str) -> String {
    format!(
        "program(1.3)\n{{\n    func main<ios18>(tensor<fp32, [2]> x) {{\n{statements}\n        }} -> ({returns});\n}}"
    )
}

/// The value of the first `const` in `main`.
fn const_value(text: &str) -> Result<Value, MilSyntaxError> {
    let program = parse_program(&program_text(
        &format!("            int32 c = const()[val = {text}];"),
        "c",
    ))?;
    let op = &program.functions["main"].block.operations[0];
    Ok(op.attributes["val"].clone())
}

fn float_of(literal: &str) -> f64 {
    match const_value(literal).map(|v| v.data) {
        Ok(ValueData::Tensor(TensorData::Float(v))) if v.len() == 1 => v[0],
        other => panic!("{literal}: expected one float, got {other:?}"),
    }
}

fn syntax_error(text: &str) -> MilSyntaxError {
    match parse_program(text) {
        Ok(p) => panic!("expected a syntax error, parsed {p:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Genuine samples

#[test]
fn every_sample_parses() {
    for dir in sample_dirs() {
        let text = read_sample(&dir);
        let program = parse_program(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(!program.functions.is_empty(), "{}", dir.display());
        assert!(
            program.attributes.contains_key("buildInfo"),
            "{}",
            dir.display()
        );
        let expected_version = if text.starts_with("program(1.3)") {
            "1.3"
        } else {
            "1.0"
        };
        assert_eq!(program.version, expected_version, "{}", dir.display());
        for function in program.functions.values() {
            assert!(
                function.opset.starts_with("CoreML"),
                "{}: opset {}",
                dir.display(),
                function.opset
            );
            assert!(!function.block.outputs.is_empty());
        }
    }
}

/// `Ios16.reduceMean`, `SliceByIndex` -> `reducemean`, `slicebyindex`; `reduce_mean` -> `reducemean`.
fn normalise_op_name(name: &str) -> String {
    let base = match name.split_once('.') {
        Some((prefix, rest)) if prefix.starts_with("Ios") => rest,
        _ => name,
    };
    base.replace('_', "").to_lowercase()
}

fn op_histogram(function: &Function) -> BTreeMap<String, u64> {
    let mut histogram = BTreeMap::new();
    for op in &function.block.operations {
        if op.op_type != "const" {
            *histogram.entry(normalise_op_name(&op.op_type)).or_insert(0) += 1;
        }
    }
    histogram
}

fn json_histogram(value: &serde_json::Value) -> BTreeMap<String, u64> {
    value
        .as_object()
        .expect("histogram is an object")
        .iter()
        .map(|(k, v)| (normalise_op_name(k), v.as_u64().expect("count")))
        .collect()
}

#[test]
fn op_counts_match_metadata_histograms() {
    let mut compared = 0;
    for dir in sample_dirs() {
        let Ok(metadata) = fs::read_to_string(dir.join("metadata.json")) else {
            continue;
        };
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).expect("metadata.json parses");
        let metadata = metadata.get(0).unwrap_or(&metadata);
        let program = parse_ok(&read_sample(&dir));
        if let Some(functions) = metadata.get("functions").and_then(|f| f.as_array()) {
            for entry in functions {
                let name = entry["name"].as_str().expect("function name");
                let expected = json_histogram(&entry["mlProgramOperationTypeHistogram"]);
                assert_eq!(
                    op_histogram(&program.functions[name]),
                    expected,
                    "{} / {name}",
                    dir.display()
                );
                compared += 1;
            }
        } else if let Some(histogram) = metadata.get("mlProgramOperationTypeHistogram") {
            assert_eq!(program.functions.len(), 1, "{}", dir.display());
            let function = program.functions.values().next().expect("one function");
            assert_eq!(
                op_histogram(function),
                json_histogram(histogram),
                "{}",
                dir.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 7, "only {compared} histograms compared");
}

#[test]
fn every_sample_round_trips_through_the_printer() {
    for dir in sample_dirs() {
        let program = parse_ok(&read_sample(&dir));
        let printed = print_program(&program).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let reparsed =
            parse_program(&printed).unwrap_or_else(|e| panic!("{}: reparse: {e}", dir.display()));
        assert_eq!(reparsed, program, "{}", dir.display());
    }
}

/// Rewrites old-syntax text into the new spelling: `tensor<T, []>` becomes `T` (grammar §7).
fn to_new_syntax(text: &str) -> String {
    let mut out = text.to_string();
    for dtype in DataType::ALL {
        out = out.replace(
            &format!("tensor<{}, []>", dtype.mil_name()),
            dtype.mil_name(),
        );
    }
    out
}

#[test]
fn printer_reproduces_apples_text_byte_for_byte() {
    for dir in sample_dirs() {
        let text = read_sample(&dir);
        let printed = print_program(&parse_ok(&text)).expect("prints");
        let expected = to_new_syntax(&text);
        if printed != expected {
            let line = printed
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .map_or(0, |i| i + 1);
            panic!(
                "{}: printed text differs from Apple's at line {line}",
                dir.display()
            );
        }
    }
}

#[test]
fn quantized_constexpr_sample_has_the_expected_structure() {
    let (_, text) = sample("quantized-constexpr");
    let program = parse_ok(&text);
    let main = &program.functions["main"];
    assert_eq!(main.opset, "CoreML7");
    assert_eq!(
        main.inputs,
        vec![NamedType {
            name: "input".into(),
            ty: ValueType::tensor(DataType::Float32, &[4])
        }]
    );
    let dequantize = &main.block.operations[0];
    assert_eq!(dequantize.op_type, "constexpr_affine_dequantize");
    assert!(dequantize.inputs.is_empty());
    assert_eq!(dequantize.outputs[0].name, "constant");
    let attrs = &dequantize.attributes;
    assert_eq!(
        attrs["axis"],
        Value {
            ty: ValueType::scalar(DataType::Int32),
            data: ValueData::Tensor(TensorData::Int(vec![0]))
        }
    );
    assert_eq!(
        attrs["quantized_data"],
        Value {
            ty: ValueType::tensor(DataType::Int8, &[4]),
            data: ValueData::Blob(BlobRef {
                path: "@model_path/weights/weights.bin".into(),
                offset: 64
            }),
        }
    );
    assert_eq!(
        attrs["scale"].data,
        ValueData::Tensor(TensorData::Float(vec![0.5]))
    );
    assert_eq!(
        attrs["zero_point"].data,
        ValueData::Tensor(TensorData::Int(vec![-1]))
    );
    let add = &main.block.operations[1];
    assert_eq!(add.inputs["x"], vec![Binding::Name("input".into())]);
    assert_eq!(add.inputs["y"], vec![Binding::Name("constant".into())]);
    assert!(add.attributes.is_empty());
    assert_eq!(main.block.outputs, vec!["output".to_string()]);
}

#[test]
fn flexible_shape_information_is_typed_from_the_outer_type() {
    let (_, text) = sample("flexible-enumerated");
    let program = parse_ok(&text);
    let info = &program.functions["main"].attributes["FlexibleShapeInformation"];
    let ValueData::Tuple(outer) = &info.data else {
        panic!("tuple expected: {info:?}")
    };
    assert_eq!(outer.len(), 2);
    let ValueData::Tuple(default_shapes) = &outer[0].data else {
        panic!("inner tuple")
    };
    assert_eq!(default_shapes[0].as_str(), Some("DefaultShapes"));
    let ValueData::Dict(entries) = &default_shapes[1].data else {
        panic!("dict")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.as_str(), Some("input"));
    // `tensor<int32, [?]>` holding `[4]` gets the written size.
    assert_eq!(
        entries[0].1,
        Value {
            ty: ValueType::tensor(DataType::Int32, &[1]),
            data: ValueData::Tensor(TensorData::Int(vec![4]))
        }
    );
    let ValueData::Tuple(enumerated) = &outer[1].data else {
        panic!("inner tuple")
    };
    assert_eq!(enumerated[0].as_str(), Some("EnumeratedShapes"));
    let ValueData::Dict(shapes) = &enumerated[1].data else {
        panic!("dict")
    };
    let keys: Vec<_> = shapes.iter().filter_map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["543d0f94", "697b758f", "9e38c1a4"]);
    let ValueData::Dict(last) = &shapes[2].1.data else {
        panic!("nested dict")
    };
    assert_eq!(last[0].1.data, ValueData::Tensor(TensorData::Int(vec![4])));
}

#[test]
fn range_dims_list_holds_one_pair_per_dimension() {
    let (_, text) = sample("flexible-gather");
    let program = parse_ok(&text);
    let main = &program.functions["main"];
    assert_eq!(
        main.inputs[1].ty,
        ValueType::Tensor {
            dtype: DataType::Int32,
            shape: Some(vec![Dim::Unknown, Dim::Unknown]),
        }
    );
    let info = &main.attributes["FlexibleShapeInformation"];
    let ValueData::Tuple(outer) = &info.data else {
        panic!("tuple")
    };
    let ValueData::Tuple(range) = &outer[1].data else {
        panic!("tuple")
    };
    let ValueData::Dict(entries) = &range[1].data else {
        panic!("dict")
    };
    let ValueData::List(pairs) = &entries[0].1.data else {
        panic!("list")
    };
    let pairs: Vec<_> = pairs.iter().map(|p| p.data.clone()).collect();
    assert_eq!(
        pairs,
        vec![
            ValueData::Tensor(TensorData::Int(vec![0, 2])),
            ValueData::Tensor(TensorData::Int(vec![0, 4])),
        ]
    );
    // Inline argument literals become values.
    let gather = main
        .block
        .operations
        .iter()
        .find(|op| op.op_type == "gather")
        .expect("gather");
    assert_eq!(
        gather.inputs["validate_indices"],
        vec![Binding::Value(Value {
            ty: ValueType::scalar(DataType::Bool),
            data: ValueData::Tensor(TensorData::Bool(vec![false])),
        })]
    );
    assert_eq!(gather.inputs["x"], vec![Binding::Name("data".into())]);
}

#[test]
fn multi_output_statement_and_multifunction_program() {
    let (_, text) = sample("silero-vad");
    let program = parse_ok(&text);
    let lstm = program.functions["main"]
        .block
        .operations
        .iter()
        .find(|op| op.op_type == "lstm")
        .expect("lstm");
    let names: Vec<_> = lstm.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "lstm_out_batch_first_0",
            "lstm_out_batch_first_1",
            "lstm_out_batch_first_2"
        ]
    );
    assert_eq!(
        lstm.outputs[0].ty,
        ValueType::tensor(DataType::Float32, &[3, 1, 128])
    );

    let (_, text) = sample("flexible-multifunction");
    let program = parse_ok(&text);
    assert_eq!(
        program.functions.keys().collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert!(program.functions.values().all(|f| f.opset == "CoreML8"));
}

#[test]
fn old_and_new_scalar_spellings_are_the_same_value() {
    let old = const_value("tensor<int32, []>(3)").expect("old spelling");
    let new = const_value("int32(3)").expect("new spelling");
    assert_eq!(old, new);
    assert_eq!(
        new,
        Value {
            ty: ValueType::scalar(DataType::Int32),
            data: ValueData::Tensor(TensorData::Int(vec![3]))
        }
    );
    let old_blob = const_value(
        "tensor<fp16, [2]>(BLOBFILE(path = tensor<string, []>(\"@model_path/weights/weight.bin\"), offset = tensor<uint64, []>(128)))",
    )
    .expect("old BLOBFILE");
    let new_blob =
        const_value("tensor<fp16, [2]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(128)))")
            .expect("new BLOBFILE");
    assert_eq!(old_blob, new_blob);
    assert_eq!(
        new_blob.data,
        ValueData::Blob(BlobRef {
            path: "@model_path/weights/weight.bin".into(),
            offset: 128
        })
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Literals

#[test]
fn hex_floats_are_read_exactly() {
    assert_eq!(float_of("fp32(0x1.8p+1)"), 3.0);
    assert_eq!(float_of("fp16(0x1p-24)"), 1.0 / 16_777_216.0); // smallest fp16 subnormal, 2^-24
    assert_eq!(float_of("fp16(-0x1.388p+13)"), -10000.0); // 0x1388 = 5000, 5000 * 2^(13-12) = 10000
    assert_eq!(float_of("fp16(0x1.ff8p-15)"), 8184.0 / 4096.0 / 32768.0); // 0x1ff8 = 8184
    assert_eq!(
        float_of("fp32(0x1.77540ap-4)"),
        24_597_514.0 / 16_777_216.0 / 16.0
    ); // 0x177540a = 24597514
    assert_eq!(float_of("fp16(0x1.ffcp+15)"), 65504.0); // largest fp16
    assert_eq!(float_of("fp64(0x1p-1074)"), f64::from_bits(1)); // smallest f64 subnormal
    assert_eq!(float_of("fp64(0x0.0000000000001p-1022)"), f64::from_bits(1)); // the same, written denormalised
    assert_eq!(float_of("fp64(0x1.fffffffffffffp+1023)"), f64::MAX);
    assert_eq!(float_of("fp64(0X1P+0)"), 1.0);
    assert_eq!(float_of("fp32(0x1p-149)"), 2f64.powi(-149)); // smallest f32 subnormal
    let zero = float_of("fp16(0x0p+0)");
    assert!(zero == 0.0 && zero.is_sign_positive());
    let negative_zero = float_of("fp16(-0x0p+0)");
    assert!(negative_zero == 0.0 && negative_zero.is_sign_negative());
    assert_eq!(float_of("fp16(inf)"), f64::INFINITY);
    assert_eq!(float_of("tensor<fp16, []>(-inf)"), f64::NEG_INFINITY);
    assert!(float_of("fp32(nan)").is_nan());
    // Decimal floats ([E5]) and integers in float position.
    assert_eq!(float_of("fp64(4.0960000000000001e-05)"), 4.096e-5);
    assert_eq!(float_of("fp64(0)"), 0.0);
    assert_eq!(float_of("fp32(0.1)"), f64::from(0.1f32));
}

#[test]
fn hex_floats_that_do_not_fit_their_type_are_rejected() {
    for literal in [
        "fp16(0x1p-25)",               // below the smallest fp16 subnormal
        "fp16(0x1.002p+0)",            // needs 11 fraction bits
        "fp16(0x1p+16)",               // above the largest fp16
        "fp32(0x1.000001p+0)",         // needs 24 fraction bits
        "fp64(0x1.00000000000008p+0)", // needs 53 fraction bits
        "fp64(0x1p+1024)",
        "fp8e4m3fn(inf)",
        "fp32(1e39)",
    ] {
        let error = const_value(literal).expect_err(literal);
        assert!(
            error.message.contains("representable")
                || error.message.contains("range")
                || error.message.contains("infinity"),
            "{literal}: {error}"
        );
    }
}

#[test]
fn tensor_literals_are_checked_against_the_shape() {
    let v = const_value("tensor<int32, [2, 3]>([[1, 2, 3], [4, 5, 6]])").expect("2x3");
    assert_eq!(
        v.data,
        ValueData::Tensor(TensorData::Int(vec![1, 2, 3, 4, 5, 6]))
    );
    let v = const_value("tensor<int32, [?, ?]>([[1, 2, 3], [4, 5, 6]])").expect("?x?");
    assert_eq!(v.ty, ValueType::tensor(DataType::Int32, &[2, 3]));
    let v = const_value("tensor<fp32, [0]>([])").expect("empty");
    assert_eq!(v.data, ValueData::Tensor(TensorData::Float(vec![])));
    let v = const_value("tensor<uint64, [2]>([18446744073709551615, 0])").expect("uint64 max");
    assert_eq!(v.data, ValueData::Tensor(TensorData::Int(vec![-1, 0])));
    let v = const_value("tensor<uint4, [2]>([15, 0])").expect("uint4");
    assert_eq!(v.data, ValueData::Tensor(TensorData::Int(vec![15, 0])));
    let v = const_value(r#"tensor<string, [2]>(["a \"q\" \\ b", "line\nnext"])"#).expect("strings");
    assert_eq!(
        v.data,
        ValueData::Tensor(TensorData::Str(vec![
            "a \"q\" \\ b".into(),
            "line\nnext".into()
        ]))
    );

    for (literal, expected) in [
        ("tensor<int32, [2, 3]>([[1, 2, 3], [4, 5]])", "size 3 but 2"),
        ("tensor<int32, [2]>([1, 2, 3])", "size 2 but 3"),
        (
            "tensor<int32, [2]>([[1], [2]])",
            "expected a value of type int32",
        ),
        ("tensor<int32, [1]>(1)", "expected `[`"),
        ("tensor<int32, [?, ?]>([[1, 2], [3]])", "ragged"),
        ("tensor<int8, [1]>([128])", "out of range"),
        ("tensor<uint4, [1]>([16])", "out of range"),
        ("tensor<int4, [1]>([-9])", "out of range"),
        ("tensor<uint8, [1]>([-1])", "out of range"),
        ("tensor<int32, [1]>([0x1p+0])", "expected an integer"),
        ("tensor<bool, [1]>([1])", "expected a value of type bool"),
        ("list<int32, 2>([1])", "2 elements but 1"),
        ("tuple<int32, fp32>((1))", "2 elements but 1"),
        ("int32()", "needs a value"),
        ("state<tensor<fp16, [1]>>([0x0p+0])", "no literal value"),
    ] {
        let error = const_value(literal).expect_err(literal);
        assert!(
            error.message.contains(expected),
            "{literal}: got `{error}`, expected `{expected}`"
        );
    }
}

#[test]
fn containers_and_empty_bodies() {
    let v = const_value(r#"dict<string, fp64>({{"ane", 0.5}, {"bnns", 0}})"#).expect("dict");
    let ValueData::Dict(entries) = &v.data else {
        panic!("dict")
    };
    assert_eq!(
        entries[1].1.data,
        ValueData::Tensor(TensorData::Float(vec![0.0]))
    );
    assert_eq!(
        const_value("dict<string, string>({})")
            .expect("empty dict")
            .data,
        ValueData::Dict(vec![])
    );
    assert_eq!(
        const_value("tuple<tuple<tensor<string, []>>>()")
            .expect("empty body")
            .data,
        ValueData::Tuple(vec![])
    );
    let v = const_value(r#"list<string, 2>(["a", "b"])"#).expect("list");
    assert_eq!(
        v.data,
        ValueData::List(vec![Value::string("a"), Value::string("b")])
    );
    let v = const_value("list<tensor<int32, [2]>, ?>([[1, 4], [4, 4]])").expect("list of tensors");
    let ValueData::List(items) = &v.data else {
        panic!("list")
    };
    assert_eq!(
        items[1].data,
        ValueData::Tensor(TensorData::Int(vec![4, 4]))
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Statements

#[test]
fn statement_forms() {
    let text = "program(1.3)\n{\n    func main<ios18>(state<tensor<fp16, [1, 2]>> s, tensor<fp16, [1, 2]> x, tensor<fp16, [1, 2]> y) {\n\
        write_state(data = x, input = s)[name = string(\"w\")];\n\
        tensor<fp16, [1, 2]> r = read_state(input = s);\n\
        tensor<fp16, [2, 2]> c = concat(axis = int32(0), interleave = bool(false), values = (r, y));\n\
        tensor<fp16, [1, 2]> t = tensor_buffer_to_tensor<ios17>(input = r);\n\
        tensor<fp16, [1, 2]> e = identity(x = ());\n\
        } -> (c, t);\n}";
    let program = parse_ok(text);
    let main = &program.functions["main"];
    assert_eq!(
        main.inputs[0].ty,
        ValueType::State(Box::new(ValueType::tensor(DataType::Float16, &[1, 2])))
    );
    let ops = &main.block.operations;
    assert_eq!(ops[0].op_type, "write_state");
    assert!(ops[0].outputs.is_empty());
    assert_eq!(ops[0].name(), Some("w"));
    assert!(ops[1].attributes.is_empty());
    assert_eq!(
        ops[2].inputs["values"],
        vec![Binding::Name("r".into()), Binding::Name("y".into())]
    );
    assert_eq!(ops[3].op_type, "tensor_buffer_to_tensor");
    assert!(ops[4].inputs["x"].is_empty());
    assert_eq!(main.block.outputs, ["c", "t"]);
    let reparsed = parse_ok(&print_program(&program).expect("prints"));
    assert_eq!(reparsed, program);
}

#[test]
fn keywords_are_ordinary_names_in_context() {
    let text = program_text(
        "            tensor<fp32, [2]> fp16 = relu(x = x);\n            tensor<fp32, [2]> tensor = add(x = fp16, y = fp16);\n            tensor<fp32, [2]> _v@1 = relu(x = tensor);",
        "tensor, _v@1",
    );
    let program = parse_ok(&text);
    let ops = &program.functions["main"].block.operations;
    assert_eq!(ops[1].inputs["x"], vec![Binding::Name("fp16".into())]);
    assert_eq!(ops[2].outputs[0].name, "_v@1");
    assert_eq!(program.functions["main"].block.outputs, ["tensor", "_v@1"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_report_line_column_and_token() {
    // Statements sit on line 4 of `program_text`, starting at column 13; the closing `}` of main is line 5, column 9.
    let cases: [(String, usize, usize, &str, &str); 10] = [
        (
            program_text("            tensor<fp32, [2]> y = relu(x = x)", "y"),
            5,
            9,
            "}",
            "expected `;`",
        ),
        (
            program_text("            tensor<fp32, [2]> y = relu(x = x);;", "y"),
            4,
            47,
            ";",
            "expected an operation name",
        ),
        (
            program_text("            tensor<fq32, [2]> y = relu(x = x);", "y"),
            4,
            20,
            "fq32",
            "unknown element type",
        ),
        (
            program_text("            int32 c = const()[val = int32(1.5)];", "c"),
            4,
            43,
            "1.5",
            "expected an integer",
        ),
        (
            program_text("            int32 c = const()[val = c];", "c"),
            4,
            37,
            "c",
            "must be a typed literal",
        ),
        (
            program_text("            fp16 c = const()[val = fp16(0x1p-30)];", "c"),
            4,
            41,
            "0x1p-30",
            "not exactly representable",
        ),
        (
            program_text(
                "            string c = const()[val = string(\"abc\\q\")];",
                "c",
            ),
            4,
            49,
            "\\q",
            "unknown string escape",
        ),
        ("program(1.3)\n{\n".to_string(), 3, 1, "", "expected `func`"),
        (
            "main[CoreML8](%x: (1, 4, fp16)(Tensor)) {\n}".to_string(),
            1,
            1,
            "main",
            "print(prog)",
        ),
        (
            "program(1.3)\n{\n    // comment\n}".to_string(),
            3,
            5,
            "//",
            "comments",
        ),
    ];
    for (text, line, column, token, message) in cases {
        let error = syntax_error(&text);
        assert_eq!(
            (error.line, error.column, error.token.as_str()),
            (line, column, token),
            "{error}\nin:\n{text}"
        );
        assert!(
            error.message.contains(message),
            "{error}: expected `{message}`"
        );
    }
}

#[test]
fn unsupported_constructs_are_rejected_clearly() {
    let error = syntax_error(&program_text(
        "            tensor_buffer<fp16, shape=[1, 2]> b = tensor_to_tensor_buffer(x = x);",
        "b",
    ));
    assert!(error.message.contains("tensor_buffer"), "{error}");
    let error = syntax_error(&program_text(
        "            tensor<fp32, [2]> y = cond(pred = x) { };",
        "y",
    ));
    assert!(error.message.contains("nested blocks"), "{error}");
    let error = syntax_error("program(1.3)\n{\n    func main<ios18>() {\n        } -> ();\n    func main<ios18>() {\n        } -> ();\n}");
    assert!(error.message.contains("defined twice"), "{error}");
    let error = syntax_error(&program_text(
        "            tensor<fp32, [2]> y = relu(x = x, x = x);",
        "y",
    ));
    assert!(error.message.contains("given twice"), "{error}");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 200_000;
    let nested_type = format!("{}int32{}", "list<".repeat(depth), ", 1>".repeat(depth));
    let error = syntax_error(&program_text(
        &format!("            {nested_type} c = const();"),
        "c",
    ));
    assert!(error.message.contains("nested deeper"), "{error}");

    let rank = 100_000;
    let shape = vec!["1"; rank].join(", ");
    let literal = format!(
        "tensor<int32, [{shape}]>({}1{})",
        "[".repeat(rank),
        "]".repeat(rank)
    );
    let error = const_value(&literal).expect_err("deep tensor");
    assert!(error.message.contains("nested deeper"), "{error}");

    let error = const_value(&format!("tuple<int32>({}", "(".repeat(depth))).expect_err("parens");
    assert!(error.line >= 1);
    let error = syntax_error(&program_text(
        &format!("            int32 c = f(x = {});", "(".repeat(depth)),
        "c",
    ));
    assert!(error.line >= 1);
}

#[test]
fn huge_lines_parse() {
    let count = 200_000;
    let values = vec!["0x1p-1"; count].join(", ");
    let value = const_value(&format!("tensor<fp16, [{count}]>([{values}])")).expect("long line");
    assert_eq!(
        value.data,
        ValueData::Tensor(TensorData::Float(vec![0.5; count]))
    );
}

/// Deterministic pseudo-random numbers (64-bit LCG, Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

#[test]
fn damaged_samples_never_panic() {
    const REPLACEMENTS: &[u8] = b"()[]{}<>,=;?-\"\\0x.p9aZ_ \n@%/";
    let mut rng = Lcg(0x5eed);
    let mut parsed = 0usize;
    for dir in sample_dirs() {
        let text = read_sample(&dir);
        let bytes = text.as_bytes();
        // Fewer mutants of the 300 KB sample keep the test quick in debug builds.
        let mutants = if bytes.len() > 100_000 { 20 } else { 300 };
        for i in 0..mutants {
            let mutant = if i % 3 == 0 {
                let mut cut = rng.next(bytes.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text[..cut].to_string()
            } else {
                let mut damaged = bytes.to_vec();
                for _ in 0..1 + rng.next(4) {
                    let at = rng.next(damaged.len());
                    if damaged[at].is_ascii() {
                        damaged[at] = REPLACEMENTS[rng.next(REPLACEMENTS.len())];
                    }
                }
                String::from_utf8(damaged).expect("only ASCII bytes were replaced")
            };
            if let Ok(program) = parse_program(&mutant) {
                // Whatever parses must also print and parse back to the same program.
                if let Ok(printed) = print_program(&program) {
                    let again = parse_program(&printed).expect("printed text parses");
                    assert_eq!(format!("{again:?}"), format!("{program:?}"));
                }
            }
            parsed += 1;
        }
    }
    assert!(parsed > 2000);
}

// ---------------------------------------------------------------------------------------------------------------
// Printer

fn scalar(dtype: DataType, data: TensorData) -> Value {
    Value {
        ty: ValueType::scalar(dtype),
        data: ValueData::Tensor(data),
    }
}

fn tensor(dtype: DataType, shape: &[u64], data: TensorData) -> Value {
    Value {
        ty: ValueType::tensor(dtype, shape),
        data: ValueData::Tensor(data),
    }
}

/// A program exercising every value kind and element type.
fn every_value_kind_program() -> Program {
    let mut attributes = BTreeMap::new();
    let floats = [
        1.0,
        -0.0,
        0.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
        2f64.powi(-24),
    ];
    for dtype in [
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::BFloat16,
    ] {
        attributes.insert(
            format!("f_{dtype}"),
            tensor(dtype, &[2, 3], TensorData::Float(floats.to_vec())),
        );
    }
    attributes.insert(
        "f_fp64_subnormal".into(),
        scalar(
            DataType::Float64,
            TensorData::Float(vec![f64::from_bits(3)]),
        ),
    );
    attributes.insert(
        "f_fp8e4m3fn".into(),
        tensor(
            DataType::Float8E4M3FN,
            &[3],
            TensorData::Float(vec![448.0, -0.015625, 0.0]),
        ),
    );
    attributes.insert(
        "f_fp8e5m2".into(),
        tensor(
            DataType::Float8E5M2,
            &[2],
            TensorData::Float(vec![57344.0, f64::NEG_INFINITY]),
        ),
    );
    for (dtype, values) in [
        (DataType::Int4, vec![-8, 7]),
        (DataType::Int8, vec![-128, 127]),
        (DataType::Int16, vec![i16::MIN.into(), i16::MAX.into()]),
        (DataType::Int32, vec![i32::MIN.into(), i32::MAX.into()]),
        (DataType::Int64, vec![i64::MIN, i64::MAX]),
        (DataType::UInt1, vec![0, 1]),
        (DataType::UInt2, vec![0, 3]),
        (DataType::UInt3, vec![0, 7]),
        (DataType::UInt4, vec![0, 15]),
        (DataType::UInt6, vec![0, 63]),
        (DataType::UInt8, vec![0, 255]),
        (DataType::UInt16, vec![0, 65535]),
        (DataType::UInt32, vec![0, u32::MAX.into()]),
        (DataType::UInt64, vec![0, -1]),
    ] {
        attributes.insert(
            format!("i_{dtype}"),
            tensor(dtype, &[2], TensorData::Int(values)),
        );
    }
    attributes.insert(
        "b".into(),
        tensor(DataType::Bool, &[2, 1], TensorData::Bool(vec![true, false])),
    );
    attributes.insert(
        "s".into(),
        tensor(
            DataType::String,
            &[3],
            TensorData::Str(vec![
                "quote \" backslash \\ tab \t newline \n cr \r".into(),
                String::new(),
                "unicode é ✓".into(),
            ]),
        ),
    );
    attributes.insert(
        "empty".into(),
        tensor(DataType::Float32, &[2, 0], TensorData::Float(vec![])),
    );
    attributes.insert(
        "blob_unknown_rank".into(),
        Value {
            ty: ValueType::Tensor {
                dtype: DataType::UInt6,
                shape: None,
            },
            data: ValueData::Blob(BlobRef {
                path: "@model_path/weights/weight \"x\".bin".into(),
                offset: u64::MAX,
            }),
        },
    );
    attributes.insert(
        "blob_flexible".into(),
        Value {
            ty: ValueType::Tensor {
                dtype: DataType::Float16,
                shape: Some(vec![Dim::Unknown, Dim::Fixed(4)]),
            },
            data: ValueData::Blob(BlobRef {
                path: "@model_path/weights/weight.bin".into(),
                offset: 64,
            }),
        },
    );
    let pair = ValueType::tensor(DataType::Int32, &[2]);
    attributes.insert(
        "list".into(),
        Value {
            ty: ValueType::List {
                elem: Box::new(pair.clone()),
                len: None,
            },
            data: ValueData::List(vec![tensor(
                DataType::Int32,
                &[2],
                TensorData::Int(vec![1, 4]),
            )]),
        },
    );
    attributes.insert(
        "empty_list".into(),
        Value {
            ty: ValueType::List {
                elem: Box::new(pair.clone()),
                len: Some(0),
            },
            data: ValueData::List(vec![]),
        },
    );
    let inner_dict_ty = ValueType::Dict {
        key: Box::new(ValueType::scalar(DataType::String)),
        value: Box::new(pair),
    };
    let inner_dict = Value {
        ty: inner_dict_ty.clone(),
        data: ValueData::Dict(vec![(
            Value::string("z"),
            tensor(DataType::Int32, &[2], TensorData::Int(vec![2, 3])),
        )]),
    };
    let outer_dict_ty = ValueType::Dict {
        key: Box::new(ValueType::scalar(DataType::String)),
        value: Box::new(inner_dict_ty.clone()),
    };
    attributes.insert(
        "dict".into(),
        Value {
            ty: outer_dict_ty.clone(),
            data: ValueData::Dict(vec![
                (Value::string("b"), inner_dict.clone()),
                (Value::string("a"), inner_dict),
            ]),
        },
    );
    attributes.insert(
        "empty_dict".into(),
        Value {
            ty: outer_dict_ty,
            data: ValueData::Dict(vec![]),
        },
    );
    let tuple_ty = ValueType::Tuple(vec![
        ValueType::scalar(DataType::String),
        ValueType::scalar(DataType::UInt64),
    ]);
    attributes.insert(
        "tuple".into(),
        Value {
            ty: ValueType::Tuple(vec![tuple_ty.clone(), ValueType::Tuple(vec![])]),
            data: ValueData::Tuple(vec![
                Value {
                    ty: tuple_ty.clone(),
                    data: ValueData::Tuple(vec![
                        Value::string("k"),
                        scalar(DataType::UInt64, TensorData::Int(vec![i64::MIN])),
                    ]),
                },
                Value {
                    ty: ValueType::Tuple(vec![]),
                    data: ValueData::Tuple(vec![]),
                },
            ]),
        },
    );
    attributes.insert(
        "empty_tuple".into(),
        Value {
            ty: tuple_ty,
            data: ValueData::Tuple(vec![]),
        },
    );

    let state_ty = ValueType::State(Box::new(ValueType::tensor(DataType::Float16, &[1, 2])));
    let x_ty = ValueType::Tensor {
        dtype: DataType::Float16,
        shape: Some(vec![Dim::Fixed(1), Dim::Unknown]),
    };
    let operations = vec![
        Operation {
            op_type: "const".into(),
            inputs: BTreeMap::new(),
            outputs: vec![NamedType {
                name: "c".into(),
                ty: ValueType::scalar(DataType::Int32),
            }],
            attributes,
            blocks: vec![],
        },
        Operation {
            op_type: "write_state".into(),
            inputs: BTreeMap::from([
                ("data".to_string(), vec![Binding::Name("x".into())]),
                ("input".to_string(), vec![Binding::Name("s".into())]),
            ]),
            outputs: vec![],
            attributes: BTreeMap::from([("name".to_string(), Value::string("w"))]),
            blocks: vec![],
        },
        Operation {
            op_type: "concat".into(),
            inputs: BTreeMap::from([
                (
                    "axis".to_string(),
                    vec![Binding::Value(scalar(
                        DataType::Int32,
                        TensorData::Int(vec![1]),
                    ))],
                ),
                (
                    "values".to_string(),
                    vec![
                        Binding::Name("x".into()),
                        Binding::Value(tensor(
                            DataType::Float16,
                            &[1, 1],
                            TensorData::Float(vec![0.25]),
                        )),
                    ],
                ),
                ("none".to_string(), vec![]),
            ]),
            outputs: vec![
                NamedType {
                    name: "y".into(),
                    ty: x_ty.clone(),
                },
                NamedType {
                    name: "y_2".into(),
                    ty: ValueType::Tensor {
                        dtype: DataType::Float32,
                        shape: None,
                    },
                },
            ],
            attributes: BTreeMap::new(),
            blocks: vec![],
        },
    ];
    let main = Function {
        inputs: vec![
            NamedType {
                name: "x".into(),
                ty: x_ty,
            },
            NamedType {
                name: "s".into(),
                ty: state_ty,
            },
        ],
        opset: "CoreML8".into(),
        attributes: BTreeMap::from([(
            "Launch_ane_ms".to_string(),
            scalar(DataType::Float64, TensorData::Float(vec![0.1])),
        )]),
        block: Block {
            inputs: vec![],
            operations,
            outputs: vec!["y".into(), "c".into()],
        },
    };
    let empty = Function {
        inputs: vec![],
        opset: "CoreML5".into(),
        attributes: BTreeMap::new(),
        block: Block::default(),
    };
    Program {
        version: "1".into(),
        functions: BTreeMap::from([("main".to_string(), main), ("empty".to_string(), empty)]),
        attributes: BTreeMap::new(),
    }
}

#[test]
fn printer_round_trips_every_value_kind() {
    let program = every_value_kind_program();
    let printed = print_program(&program).expect("prints");
    let reparsed = parse_program(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(reparsed, program);
    assert!(printed.starts_with("program(1)\n{\n    func empty<ios15>() {\n        } -> ();\n    func main<ios18>(tensor<fp16, [1, ?]> x, state<tensor<fp16, [1, 2]>> s) [Launch_ane_ms = fp64(0x1.999999999999ap-4)] {\n"));
    assert!(
        printed.contains("            write_state(data = x, input = s)[name = string(\"w\")];\n")
    );
    assert!(printed.contains("values = (x, tensor<fp16, [1, 1]>([[0x1p-2]]))"));
    assert!(printed.contains("none = ()"));
    assert!(printed.contains("i_uint64 = tensor<uint64, [2]>([0, 18446744073709551615])"));
    assert!(printed.contains(
        "f_fp16 = tensor<fp16, [2, 3]>([[0x1p+0, -0x0p+0, 0x1p-1], [inf, -inf, 0x1p-24]])"
    ));
    assert!(printed.contains("f_fp64_subnormal = fp64(0x1.8p-1073)"));
    assert!(printed.contains(
        "BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(64))"
    ));
    assert!(printed.contains(r#""quote \" backslash \\ tab \t newline \n cr \r""#));
    assert!(printed.ends_with("        } -> (y, c);\n}"));
}

#[test]
fn printer_reports_what_it_cannot_write() {
    let mut program = every_value_kind_program();
    let main = program.functions.get_mut("main").expect("main");
    main.block.operations[1].blocks.push(Block::default());
    assert!(
        matches!(print_program(&program), Err(MilPrintError::Unsupported(m)) if m.contains("write_state"))
    );

    let mut program = every_value_kind_program();
    let main = program.functions.get_mut("main").expect("main");
    main.block.operations[2].outputs[0].name = "has space".into();
    assert!(
        matches!(print_program(&program), Err(MilPrintError::InvalidName { name, .. }) if name == "has space")
    );

    let mut program = every_value_kind_program();
    let main = program.functions.get_mut("main").expect("main");
    main.block.operations[0].attributes.insert(
        "bad".into(),
        tensor(DataType::Int32, &[3], TensorData::Int(vec![1, 2])),
    );
    assert!(matches!(
        print_program(&program),
        Err(MilPrintError::InconsistentValue { .. })
    ));

    let mut program = every_value_kind_program();
    program.version = "1.3 ".into();
    assert!(matches!(
        print_program(&program),
        Err(MilPrintError::InvalidVersion(_))
    ));
}

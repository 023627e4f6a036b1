//! The genuine compiled `model.mil` samples of `fixtures/mil-text/`: every program uses only supported ops, and the
//! real networks that ship their weights (Whisper mel-spectrogram, Silero VAD with 4-bit palettized weights) load
//! and run to outputs of the declared shapes.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::text::parse_program;
use candle_coreml_runtime::plan::unsupported_ops;
use candle_coreml_runtime::CoreMLModel;
use common::{fixture, values};

#[test]
fn every_sample_uses_only_supported_ops() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixture("mil-text")).unwrap() {
        let dir = entry.unwrap().path();
        let mil = dir.join("model.mil");
        if !mil.exists() {
            continue;
        }
        let program = parse_program(&std::fs::read_to_string(&mil).unwrap()).unwrap();
        for (name, function) in &program.functions {
            let missing = unsupported_ops(function);
            assert!(
                missing.is_empty(),
                "{}: function `{name}` needs {missing:?}",
                dir.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} functions checked");
}

#[test]
fn whisper_mel_spectrogram_runs() {
    let model = CoreMLModel::load(fixture(
        "mil-text/alifarpl__Aksera-WhisperKit__whisper-melspectrogram",
    ))
    .unwrap();
    let n = 480_000;
    let audio: Vec<f32> = (0..n)
        .map(|i| 0.3 * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16_000.0).sin())
        .collect();
    let audio = Tensor::from_vec(audio, n, &Device::Cpu).unwrap();
    let mel = model.forward(&[&audio]).unwrap();
    assert_eq!(mel.dims(), &[1, 128, 1, 3000]);
    assert_eq!(mel.dtype(), DType::F16);
    let v = values(&mel);
    assert!(v.iter().all(|x| x.is_finite()));
    // Whisper normalisation: log10 values clamped to (max - 8), then (x + 4) / 4, so the range is at most 2.
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(hi - lo <= 2.0 + 1e-2, "range {lo}..{hi}");
    // A 440 Hz tone: the mel bin holding 440 Hz is far louder than the top bins.
    let mel2 = mel
        .squeeze(2)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let energy: Vec<f32> = mel2.mean(1).unwrap().to_vec1().unwrap();
    let loudest = energy
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &e)| if e > a.1 { (i, e) } else { a })
        .0;
    assert!(loudest > 5 && loudest < 40, "loudest mel bin {loudest}");
}

#[test]
fn silero_vad_palettized_runs() {
    let model = CoreMLModel::load(fixture(
        "mil-text/smdesai__mobius__silero-vad-unified-palette-4bit",
    ))
    .unwrap();
    let audio = Tensor::zeros((1, 576), DType::F32, &Device::Cpu).unwrap();
    let state = Tensor::zeros((1, 128), DType::F32, &Device::Cpu).unwrap();
    let outs = model
        .predict(&[
            ("audio_input", &audio),
            ("cell_state", &state),
            ("hidden_state", &state),
        ])
        .unwrap();
    let names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["vad_output", "new_hidden_state", "new_cell_state"]);
    let p = values(&outs[0].1);
    assert!(
        p.iter().all(|&x| (0.0..=1.0).contains(&x)),
        "probabilities {p:?}"
    );
    assert_eq!(outs[1].1.dims(), &[1, 128]);
}

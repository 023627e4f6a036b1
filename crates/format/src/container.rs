//! Opening any Core ML model path as one [`ModelFile`]: an `.mlpackage` directory, a single `.mlmodel` protobuf file,
//! a compiled `.mlmodelc` directory, or a zipped `.mlmodelc.zip`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::blob::WeightStore;
use crate::description::{self, ModelDescription};
use crate::error::{FormatError, Result};
use crate::mil::{self, from_proto::program_from_proto, Program};
use crate::proto::spec as pb;

/// Largest total uncompressed size accepted when extracting a `.mlmodelc.zip` (64 GiB).
pub const MAX_ZIP_UNCOMPRESSED_BYTES: u64 = 64 << 30;
/// Largest number of entries accepted in a `.mlmodelc.zip`.
pub const MAX_ZIP_ENTRIES: usize = 100_000;

/// The on-disk form of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// An `.mlpackage` directory (`Manifest.json`, protobuf spec, weight files).
    MlPackage,
    /// A single protobuf `.mlmodel` file (weights, if any, in a `weights/` directory beside it).
    MlModel,
    /// A compiled `.mlmodelc` directory (`model.mil` text, `metadata.json`, weight files).
    MlModelc,
    /// A zipped `.mlmodelc`, extracted next to the archive.
    MlModelcZip,
}

impl ModelFormat {
    /// A short name: `mlpackage`, `mlmodel`, `mlmodelc`, `mlmodelc.zip`.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::MlPackage => "mlpackage",
            ModelFormat::MlModel => "mlmodel",
            ModelFormat::MlModelc => "mlmodelc",
            ModelFormat::MlModelcZip => "mlmodelc.zip",
        }
    }
}

/// File-name extensions under which a Core ML model may be stored, in order of preference.
pub const MODEL_EXTENSIONS: [&str; 4] = [".mlmodelc", ".mlmodelc.zip", ".mlpackage", ".mlmodel"];

/// Strips a model-file extension (`.mlmodelc`, `.mlmodelc.zip`, `.mlpackage`, `.mlmodel`) from a name.
pub fn strip_model_extension(name: &str) -> &str {
    MODEL_EXTENSIONS
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name)
}

/// Finds the model file named `name` (any extension, or none) in `dir`: first the exact name when it is a model
/// file name, then the same stem with each of [`MODEL_EXTENSIONS`] in turn.
pub fn resolve_model_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.exists() && MODEL_EXTENSIONS.iter().any(|ext| name.ends_with(ext)) {
        return Some(exact);
    }
    let stem = strip_model_extension(name);
    MODEL_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{stem}{ext}")))
        .find(|p| p.exists())
}

/// A Core ML ML Program read from disk: its description, program and weights.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// The path that was opened.
    pub path: PathBuf,
    /// Its on-disk form.
    pub format: ModelFormat,
    /// Functions, inputs, outputs, states and metadata.
    pub description: ModelDescription,
    /// The program.
    pub program: Program,
    /// The weight files the program refers to.
    pub weights: WeightStore,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn ends_with(path: &Path, suffix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(suffix))
}

impl ModelFile {
    /// Opens a model, deciding its form from what the path is: a directory with `Manifest.json` (`.mlpackage`), a
    /// directory with `model.mil` (`.mlmodelc`), a `.zip` file (`.mlmodelc.zip`, extracted beside it on first use),
    /// or any other file (protobuf `.mlmodel`).
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFile> {
        let path = path.as_ref();
        let meta = fs::metadata(path).map_err(io_error(path))?;
        if meta.is_dir() {
            if path.join("Manifest.json").is_file() {
                open_package(path)
            } else if path.join("model.mil").is_file() {
                open_compiled(path, path, ModelFormat::MlModelc)
            } else if path.join("model0").is_dir() {
                Err(FormatError::UnsupportedModelType {
                    path: path.to_path_buf(),
                    kind: "pipeline".into(),
                })
            } else {
                Err(invalid(
                    path,
                    "directory is neither an .mlpackage (no Manifest.json) nor an .mlmodelc (no model.mil)",
                ))
            }
        } else if ends_with(path, ".zip") {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let bundle = extract_mlmodelc_zip(path, parent)?;
            open_compiled(path, &bundle, ModelFormat::MlModelcZip)
        } else {
            let root = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            open_spec(path, path, root, ModelFormat::MlModel)
        }
    }

    /// The function description and program function called `name`.
    pub fn function(
        &self,
        name: &str,
    ) -> Option<(&description::FunctionDescription, &mil::Function)> {
        Some((
            self.description.function(name)?,
            self.program.functions.get(name)?,
        ))
    }
}

fn open_package(package: &Path) -> Result<ModelFile> {
    let manifest_path = package.join("Manifest.json");
    let text = fs::read_to_string(&manifest_path).map_err(io_error(&manifest_path))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| FormatError::Json {
            path: manifest_path.clone(),
            source,
        })?;
    let root_id = manifest
        .get("rootModelIdentifier")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid(&manifest_path, "no `rootModelIdentifier`"))?;
    let item_path = manifest
        .get("itemInfoEntries")
        .and_then(|e| e.get(root_id))
        .and_then(|e| e.get("path"))
        .and_then(|p| p.as_str())
        .ok_or_else(|| {
            invalid(
                &manifest_path,
                format!("`itemInfoEntries` has no path for the root model `{root_id}`"),
            )
        })?;
    let relative = Path::new(item_path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(invalid(
            &manifest_path,
            format!("root model path `{item_path}` must be relative without `..`"),
        ));
    }
    let spec_path = package.join("Data").join(relative);
    let root = spec_path.parent().unwrap_or(package).to_path_buf();
    open_spec(package, &spec_path, &root, ModelFormat::MlPackage)
}

/// The name of a spec's model type, as in `Model.proto` (`neuralNetwork`, `pipeline`, ...).
pub fn model_type_name(t: &pb::model::Type) -> &'static str {
    use pb::model::Type as T;
    match t {
        T::PipelineClassifier(_) => "pipelineClassifier",
        T::PipelineRegressor(_) => "pipelineRegressor",
        T::Pipeline(_) => "pipeline",
        T::GlmRegressor(_) => "glmRegressor",
        T::SupportVectorRegressor(_) => "supportVectorRegressor",
        T::TreeEnsembleRegressor(_) => "treeEnsembleRegressor",
        T::NeuralNetworkRegressor(_) => "neuralNetworkRegressor",
        T::BayesianProbitRegressor(_) => "bayesianProbitRegressor",
        T::GlmClassifier(_) => "glmClassifier",
        T::SupportVectorClassifier(_) => "supportVectorClassifier",
        T::TreeEnsembleClassifier(_) => "treeEnsembleClassifier",
        T::NeuralNetworkClassifier(_) => "neuralNetworkClassifier",
        T::KNearestNeighborsClassifier(_) => "kNearestNeighborsClassifier",
        T::NeuralNetwork(_) => "neuralNetwork",
        T::ItemSimilarityRecommender(_) => "itemSimilarityRecommender",
        T::MlProgram(_) => "mlProgram",
        T::CustomModel(_) => "customModel",
        T::LinkedModel(_) => "linkedModel",
        T::ClassConfidenceThresholding(_) => "classConfidenceThresholding",
        T::OneHotEncoder(_) => "oneHotEncoder",
        T::Imputer(_) => "imputer",
        T::FeatureVectorizer(_) => "featureVectorizer",
        T::DictVectorizer(_) => "dictVectorizer",
        T::Scaler(_) => "scaler",
        T::CategoricalMapping(_) => "categoricalMapping",
        T::Normalizer(_) => "normalizer",
        T::ArrayFeatureExtractor(_) => "arrayFeatureExtractor",
        T::NonMaximumSuppression(_) => "nonMaximumSuppression",
        T::Identity(_) => "identity",
        T::TextClassifier(_) => "textClassifier",
        T::WordTagger(_) => "wordTagger",
        T::VisionFeaturePrint(_) => "visionFeaturePrint",
        T::SoundAnalysisPreprocessing(_) => "soundAnalysisPreprocessing",
        T::Gazetteer(_) => "gazetteer",
        T::WordEmbedding(_) => "wordEmbedding",
        T::AudioFeaturePrint(_) => "audioFeaturePrint",
        T::SerializedModel(_) => "serializedModel",
    }
}

/// Decodes a protobuf `CoreML.Specification.Model` file.
pub fn read_spec(spec_path: &Path) -> Result<pb::Model> {
    let bytes = fs::read(spec_path).map_err(io_error(spec_path))?;
    pb::Model::decode(bytes.as_slice()).map_err(|source| FormatError::Protobuf {
        path: spec_path.to_path_buf(),
        source,
    })
}

/// Reads the ML Program of a decoded spec; other model types give [`FormatError::UnsupportedModelType`].
fn spec_program(spec: &pb::Model, spec_path: &Path) -> Result<Program> {
    match &spec.r#type {
        Some(pb::model::Type::MlProgram(p)) => program_from_proto(p, spec_path),
        Some(other) => Err(FormatError::UnsupportedModelType {
            path: spec_path.to_path_buf(),
            kind: model_type_name(other).into(),
        }),
        None => Err(FormatError::UnsupportedModelType {
            path: spec_path.to_path_buf(),
            kind: "none (the specification sets no model type)".into(),
        }),
    }
}

fn open_spec(path: &Path, spec_path: &Path, root: &Path, format: ModelFormat) -> Result<ModelFile> {
    let spec = read_spec(spec_path)?;
    let program = spec_program(&spec, spec_path)?;
    let description = match &spec.description {
        Some(d) => description::from_proto(d, spec.specification_version, &program, spec_path)?,
        None => {
            let mut d = description::derive(&program);
            d.spec_version = Some(spec.specification_version);
            d
        }
    };
    let weights = WeightStore::open(root, &program)?;
    Ok(ModelFile {
        path: path.to_path_buf(),
        format,
        description,
        program,
        weights,
    })
}

fn open_compiled(path: &Path, bundle: &Path, format: ModelFormat) -> Result<ModelFile> {
    let mil_path = bundle.join("model.mil");
    let text = fs::read_to_string(&mil_path).map_err(io_error(&mil_path))?;
    let program = mil::text::parse_program(&text).map_err(|source| FormatError::MilSyntax {
        path: mil_path.clone(),
        source,
    })?;
    let metadata_path = bundle.join("metadata.json");
    let description = if metadata_path.is_file() {
        let json = fs::read_to_string(&metadata_path).map_err(io_error(&metadata_path))?;
        description::from_metadata_json(&json, &program, &metadata_path)?
    } else {
        description::derive(&program)
    };
    let weights = WeightStore::open(bundle, &program)?;
    Ok(ModelFile {
        path: path.to_path_buf(),
        format,
        description,
        program,
        weights,
    })
}

fn zip_error(path: &Path, message: impl Into<String>) -> FormatError {
    FormatError::Zip {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Finds the compiled bundle inside an extraction directory: the directory itself when it holds `model.mil`, or its
/// only `*.mlmodelc` subdirectory.
fn find_bundle(dir: &Path, zip: &Path) -> Result<PathBuf> {
    if dir.join("model.mil").is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut bundles = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let p = entry.path();
        if p.is_dir() && (ends_with(&p, ".mlmodelc") || p.join("model.mil").is_file()) {
            bundles.push(p);
        }
    }
    match bundles.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(zip_error(
            zip,
            "the archive holds no .mlmodelc bundle (no model.mil)",
        )),
        _ => Err(zip_error(
            zip,
            "the archive holds several .mlmodelc bundles",
        )),
    }
}

/// Extracts `X.mlmodelc.zip` to `dest_parent/X.mlmodelc` and returns that directory; reuses it when it already
/// exists. Rejects absolute paths, `..`, symlinks, more than [`MAX_ZIP_ENTRIES`] entries or more than
/// [`MAX_ZIP_UNCOMPRESSED_BYTES`]. Extraction goes to a temporary directory that is renamed into place, so a partial
/// extraction is never seen.
pub fn extract_mlmodelc_zip(zip: &Path, dest_parent: &Path) -> Result<PathBuf> {
    let file_name = zip
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| zip_error(zip, "archive name is not valid UTF-8"))?;
    let stem = file_name
        .strip_suffix(".zip")
        .or_else(|| file_name.strip_suffix(".ZIP"))
        .unwrap_or(file_name);
    let bundle_name = if ends_with(Path::new(stem), ".mlmodelc") {
        stem.to_string()
    } else {
        format!("{stem}.mlmodelc")
    };
    let target = dest_parent.join(&bundle_name);
    if target.join("model.mil").is_file() {
        return Ok(target);
    }
    let file = fs::File::open(zip).map_err(io_error(zip))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| zip_error(zip, format!("cannot read: {e}")))?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(zip_error(
            zip,
            format!(
                "{} entries (at most {MAX_ZIP_ENTRIES} accepted)",
                archive.len()
            ),
        ));
    }
    fs::create_dir_all(dest_parent).map_err(io_error(dest_parent))?;
    let temp = dest_parent.join(format!(
        ".{bundle_name}.partial-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let result = extract_into(&mut archive, zip, &temp).and_then(|()| {
        let bundle = find_bundle(&temp, zip)?;
        match fs::rename(&bundle, &target) {
            Ok(()) => Ok(target.clone()),
            Err(_) if target.join("model.mil").is_file() => Ok(target.clone()),
            Err(e) => Err(io_error(&target)(e)),
        }
    });
    // Best-effort cleanup: the temporary directory is ours alone, and a leftover does no harm.
    let _ = fs::remove_dir_all(&temp);
    result
}

fn extract_into(archive: &mut zip::ZipArchive<fs::File>, zip: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).map_err(io_error(dest))?;
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| zip_error(zip, format!("entry #{i}: {e}")))?;
        let raw_name = entry
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| format!("#{i}"));
        if entry.is_symlink() {
            return Err(zip_error(zip, format!("entry `{raw_name}` is a symlink")));
        }
        let absolute =
            raw_name.starts_with(['/', '\\']) || raw_name.as_bytes().get(1) == Some(&b':');
        let relative = entry
            .enclosed_name()
            .filter(|p| !absolute && p.components().all(|c| matches!(c, Component::Normal(_))))
            .ok_or_else(|| {
                zip_error(
                    zip,
                    format!("entry `{raw_name}` has an absolute or `..` path"),
                )
            })?;
        if relative
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == "__MACOSX")
        {
            continue;
        }
        let out = dest.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(io_error(&out))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let budget = MAX_ZIP_UNCOMPRESSED_BYTES - total;
        let mut writer = fs::File::create(&out).map_err(io_error(&out))?;
        let copied = std::io::copy(&mut (&mut entry).take(budget + 1), &mut writer)
            .map_err(|e| zip_error(zip, format!("entry `{raw_name}`: {e}")))?;
        writer.flush().map_err(io_error(&out))?;
        if copied > budget {
            return Err(zip_error(
                zip,
                format!("uncompressed contents exceed {MAX_ZIP_UNCOMPRESSED_BYTES} bytes"),
            ));
        }
        total += copied;
    }
    Ok(())
}

//! [`CoreMLModel`]: one function of a loaded Core ML model, ready to run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use candle_coreml_format::description::{
    FeatureKind, FunctionDescription, ModelDescription, ShapeFlexibility,
};
use candle_coreml_format::ModelFile;

use crate::consts::ConstCache;
use crate::error::{program_error, Result, RuntimeError};
use crate::plan::FunctionPlan;
use crate::state::ModelState;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// The portable MIL executor on candle-core (any OS).
    #[default]
    Portable,
    /// Apple's Core ML framework (macOS only; not available in this build).
    CoreML,
}

/// Options for [`CoreMLModel::load_with`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Function to run; `None` = the model's default function.
    pub function: Option<String>,
    /// Engine.
    pub backend: Backend,
    /// Device the tensors live on.
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            function: None,
            backend: Backend::Portable,
            device: Device::Cpu,
        }
    }
}

/// A model file with its constant cache and the plans built so far (shared by every [`CoreMLModel`] of the file).
struct LoadedModel {
    file: ModelFile,
    cache: ConstCache,
    plans: Mutex<HashMap<String, Arc<FunctionPlan>>>,
    device: Device,
}

impl LoadedModel {
    fn plan(&self, function: &str) -> Result<Arc<FunctionPlan>> {
        if let Some(p) = self
            .plans
            .lock()
            .ok()
            .and_then(|m| m.get(function).cloned())
        {
            return Ok(p);
        }
        let f = self.file.program.functions.get(function).ok_or_else(|| {
            let names: Vec<&str> = self
                .file
                .program
                .functions
                .keys()
                .map(String::as_str)
                .collect();
            program_error(format!(
                "{}: no function `{function}` (functions: {})",
                self.file.path.display(),
                names.join(", ")
            ))
        })?;
        let start = std::time::Instant::now();
        let plan = Arc::new(FunctionPlan::build(
            function,
            f,
            Some(&self.file.weights),
            &self.cache,
            &self.device,
        )?);
        // Every constant the plan needs has been copied out of the weight files.
        self.file.weights.release_resident_pages();
        let (constants, bytes) = self.cache.stats();
        tracing::debug!(
            path = %self.file.path.display(),
            function,
            steps = plan.step_count(),
            in_place_state_updates = plan.fused_state_updates(),
            repeated_kv_matmuls = plan.fused_repeated_kv(),
            constants,
            constant_bytes = bytes,
            elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
            "planned function"
        );
        if let Ok(mut m) = self.plans.lock() {
            m.insert(function.to_string(), plan.clone());
        }
        Ok(plan)
    }
}

/// One function of a loaded model. Cheap to clone; functions of one file share their constant tensors.
#[derive(Clone)]
pub struct CoreMLModel {
    model: Arc<LoadedModel>,
    function: String,
    function_index: usize,
    plan: Arc<FunctionPlan>,
}

impl std::fmt::Debug for CoreMLModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreMLModel")
            .field("path", &self.model.file.path)
            .field("function", &self.function)
            .finish()
    }
}

impl CoreMLModel {
    /// Loads the default function of a model on the CPU.
    pub fn load(path: impl AsRef<Path>) -> Result<CoreMLModel> {
        CoreMLModel::load_with(path, &LoadOptions::default())
    }

    /// Loads a model with options (function, backend, device).
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<CoreMLModel> {
        if options.backend == Backend::CoreML {
            return Err(RuntimeError::Backend(if cfg!(target_os = "macos") {
                "the Core ML framework backend is not implemented yet; use Backend::Portable"
                    .to_string()
            } else {
                "the Core ML framework backend needs macOS; use Backend::Portable on this OS"
                    .to_string()
            }));
        }
        let file = ModelFile::open(path.as_ref())?;
        let model = Arc::new(LoadedModel {
            file,
            cache: ConstCache::default(),
            plans: Mutex::new(HashMap::new()),
            device: options.device.clone(),
        });
        let function = match &options.function {
            Some(f) => f.clone(),
            None => model.file.description.default_function.clone(),
        };
        CoreMLModel::for_function(model, &function)
    }

    fn for_function(model: Arc<LoadedModel>, function: &str) -> Result<CoreMLModel> {
        let function_index = model
            .file
            .description
            .functions
            .iter()
            .position(|f| f.name == function)
            .ok_or_else(|| {
                let names: Vec<&str> = model
                    .file
                    .description
                    .functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect();
                program_error(format!(
                    "{}: no function `{function}` in the model description (functions: {})",
                    model.file.path.display(),
                    names.join(", ")
                ))
            })?;
        let plan = model.plan(function)?;
        Ok(CoreMLModel {
            model,
            function: function.to_string(),
            function_index,
            plan,
        })
    }

    /// Another function of the same file; constant tensors are shared, not reloaded.
    pub fn with_function(&self, name: &str) -> Result<CoreMLModel> {
        CoreMLModel::for_function(self.model.clone(), name)
    }

    /// The path the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.model.file.path
    }

    /// Name of this function.
    pub fn function_name(&self) -> &str {
        &self.function
    }

    /// The whole model's description.
    pub fn description(&self) -> &ModelDescription {
        &self.model.file.description
    }

    /// This function's description.
    pub fn function_description(&self) -> &FunctionDescription {
        &self.model.file.description.functions[self.function_index]
    }

    /// The execution plan of this function.
    pub fn plan(&self) -> &FunctionPlan {
        &self.plan
    }

    /// Number and total bytes of the constant tensors materialised for this file so far.
    pub fn constant_stats(&self) -> (usize, usize) {
        self.model.cache.stats()
    }

    /// Input names in declaration order.
    pub fn input_names(&self) -> Vec<&str> {
        self.plan.inputs().iter().map(|i| i.name.as_str()).collect()
    }

    /// Output names in declaration order.
    pub fn output_names(&self) -> Vec<&str> {
        self.plan.outputs().into_iter().map(|(n, _)| n).collect()
    }

    /// Checks input shapes against the description's fixed, enumerated or ranged shapes.
    fn check_described_shapes(&self, inputs: &[(&str, &Tensor)]) -> Result<()> {
        for feature in &self.function_description().inputs {
            let FeatureKind::Array(array) = &feature.kind else {
                continue;
            };
            let Some((_, t)) = inputs.iter().find(|(n, _)| *n == feature.name) else {
                continue;
            };
            let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
            let ok = match &array.flexibility {
                ShapeFlexibility::Fixed => array.shape.is_empty() || array.shape == dims,
                ShapeFlexibility::Enumerated(shapes) => shapes.contains(&dims),
                ShapeFlexibility::Range(ranges) => {
                    ranges.len() == dims.len()
                        && ranges.iter().zip(&dims).all(|(r, &d)| {
                            d as u64 >= r.lower && r.upper.is_none_or(|u| d as u64 <= u)
                        })
                }
            };
            if !ok {
                let expected = match &array.flexibility {
                    ShapeFlexibility::Fixed => format!("{:?}", array.shape),
                    ShapeFlexibility::Enumerated(shapes) => format!("one of {shapes:?}"),
                    ShapeFlexibility::Range(ranges) => format!(
                        "dims in [{}]",
                        ranges
                            .iter()
                            .map(|r| match r.upper {
                                Some(u) => format!("{}..={u}", r.lower),
                                None => format!("{}..", r.lower),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(RuntimeError::Input {
                    name: feature.name.clone(),
                    message: format!("shape {dims:?} is not accepted; expected {expected}"),
                });
            }
        }
        Ok(())
    }

    /// Runs a stateless function on named inputs; outputs in declared order and dtypes.
    pub fn predict(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        if let Some(s) = self.plan.states().first() {
            return Err(RuntimeError::State {
                name: s.name.clone(),
                message: format!(
                    "function `{}` is stateful; create a state with make_state and call predict_with_state",
                    self.function
                ),
            });
        }
        self.predict_with_state(inputs, &mut ModelState::new())
    }

    /// Runs the function with a state object, which is read and updated in place.
    pub fn predict_with_state(
        &self,
        inputs: &[(&str, &Tensor)],
        state: &mut ModelState,
    ) -> Result<Vec<(String, Tensor)>> {
        self.check_described_shapes(inputs)?;
        self.plan.run_named(inputs, state)
    }

    /// Runs a stateless function on positional inputs (declared order) and returns the first output.
    pub fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        self.forward_all(inputs)?
            .into_iter()
            .next()
            .ok_or_else(|| program_error(format!("function `{}` has no outputs", self.function)))
    }

    /// Runs a stateless function on positional inputs (declared order) and returns every output.
    pub fn forward_all(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let names = self.input_names();
        if inputs.len() != names.len() {
            return Err(RuntimeError::Input {
                name: names.join(", "),
                message: format!(
                    "expected {} positional inputs, got {}",
                    names.len(),
                    inputs.len()
                ),
            });
        }
        let named: Vec<(&str, &Tensor)> = names.into_iter().zip(inputs.iter().copied()).collect();
        Ok(self.predict(&named)?.into_iter().map(|(_, t)| t).collect())
    }

    /// A zero-filled state for this function's declared states (usable with every function and model that
    /// declares the same states).
    pub fn make_state(&self) -> Result<ModelState> {
        self.plan.make_state()
    }
}

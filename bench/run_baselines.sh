#!/usr/bin/env bash
# Baseline speed runs for docs/benchmarks.md: llama.cpp (GGUF F16 and Q8_0) and candle-transformers (f32, f16)
# on the Hugging Face checkpoint written by tools/gen_synthetic_anemll.py.
#
# Usage: bench/run_baselines.sh MODEL_DIR [LLAMA_CPP_BUILD_BIN]
#   MODEL_DIR            output of gen_synthetic_anemll.py (its hf/ subdirectory holds the checkpoint)
#   LLAMA_CPP_BUILD_BIN  llama.cpp build/bin directory (default /work/llama.cpp/build/bin)
# Env: THREADS (default 2), REPS (default 5), PROMPT (default 64), GEN (default 32).
#
# Each benchmark runs in its own process session with autogroup nice -20 when allowed (root), so that other
# jobs on the box do not deschedule one of its threads (see shared/docs/perf-anchors.md section 6).
set -euo pipefail

model_dir=${1:?usage: bench/run_baselines.sh MODEL_DIR [LLAMA_CPP_BUILD_BIN]}
llama_bin=${2:-/work/llama.cpp/build/bin}
threads=${THREADS:-2}
reps=${REPS:-5}
prompt=${PROMPT:-64}
gen=${GEN:-32}
repo=$(cd "$(dirname "$0")/.." && pwd)
hf="$model_dir/hf"
gguf_dir="$model_dir/gguf"
candle_bin="$repo/bench/candle-baseline/target/release/candle-baseline"

# Run a command with raised priority in a fresh session (falls back to plain execution).
hi() {
    setsid bash -c 'echo -20 > /proc/self/autogroup 2>/dev/null || true; exec nice -n -20 "$@"' _ "$@"
}

mkdir -p "$gguf_dir"
if [[ ! -f "$gguf_dir/model-F16.gguf" ]]; then
    nice -n 19 "$repo/tools/.venv/bin/python" "$repo/tools/hf_qwen3_to_gguf.py" "$hf" "$gguf_dir/model-F16.gguf"
fi
if [[ ! -f "$gguf_dir/model-Q8_0.gguf" ]]; then
    nice -n 19 "$llama_bin/llama-quantize" "$gguf_dir/model-F16.gguf" "$gguf_dir/model-Q8_0.gguf" Q8_0 2
fi

echo "== $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
for q in F16 Q8_0; do
    hi "$llama_bin/llama-bench" -m "$gguf_dir/model-$q.gguf" -t "$threads" -p "$prompt" -n "$gen" -r "$reps" -o md
done

if [[ ! -x "$candle_bin" ]]; then
    (cd "$repo/bench/candle-baseline" && RUSTFLAGS="-C target-cpu=native" nice -n 19 cargo build --release)
fi
for dt in f32 f16; do
    RAYON_NUM_THREADS=$threads hi "$candle_bin" "$hf" "$dt" "$prompt" "$gen" "$reps"
done
echo "== $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"

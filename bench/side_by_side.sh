#!/usr/bin/env bash
# Side-by-side speed of candle-coreml and the baselines on the same synthetic weights, interleaved in rounds:
# per round, `candle-coreml bench` on each ANEMLL set, then bench/run_baselines.sh (llama.cpp F16/Q8_0 and
# candle-transformers f32/f16) on the checkpoint of the first set.
#
# Usage: bench/side_by_side.sh MODELS_DIR [ROUNDS]
#   MODELS_DIR  holds qwen3-0.6b-lut8, qwen3-0.6b-lut4 (and optionally qwen3-0.6b-lutnone) from
#               tools/gen_synthetic_anemll.py; lut8 must also hold hf/ and gguf/ (see docs/benchmarks.md)
# Env: THREADS (default 2), REPS (default 5), PROMPT (default 64), GEN (default 32), as in run_baselines.sh.
set -euo pipefail

models=${1:?usage: bench/side_by_side.sh MODELS_DIR [ROUNDS]}
rounds=${2:-2}
threads=${THREADS:-2}
reps=${REPS:-5}
prompt=${PROMPT:-64}
gen=${GEN:-32}
repo=$(cd "$(dirname "$0")/.." && pwd)
cli="$repo/target/release/candle-coreml"
if [[ ! -x "$cli" ]]; then
    (cd "$repo" && nice -n 19 cargo build --release -p candle-coreml-cli)
fi

# Raised priority in a fresh session, as run_baselines.sh does.
hi() {
    setsid bash -c 'echo -20 > /proc/self/autogroup 2>/dev/null || true; exec nice -n -20 "$@"' _ "$@"
}

for round in $(seq 1 "$rounds"); do
    echo "######## round $round, $(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg)"
    for set in lut8 lut4 lutnone; do
        dir="$models/qwen3-0.6b-$set"
        [[ -d "$dir" ]] || continue
        hi "$cli" bench --model "$dir" --prompt-len "$prompt" --gen-len "$gen" --repeats "$reps" --threads "$threads"
    done
    THREADS=$threads REPS=$reps PROMPT=$prompt GEN=$gen "$repo/bench/run_baselines.sh" "$models/qwen3-0.6b-lut8"
done

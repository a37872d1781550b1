#!/usr/bin/env bash
# Train, tune and ship the Fashion-MNIST models of issue 5, then evaluate them all with one protocol.
#
#   scripts/fmnist_models.sh train "js 0" "js 1" "cd 1"   # train (or resume) each "DIV SEED", one thread each
#   scripts/fmnist_models.sh ship js-s1 cd-s1             # tune on the val split, copy into checkpoints/
#   scripts/fmnist_models.sh evaluate                     # the results table, grids and cards
#   scripts/fmnist_models.sh curve js cd                  # continue shipped models to CURVE_STEPS (10000)
#
# Runs live in runs/ckpt/fmnist-<div>[-s<seed>] (seed 0 has no suffix); a killed run resumes from its last
# checkpoint when trained again, and a finished one is skipped. JOBS=2 trains two at a time (the 2-core
# machine); each process uses one thread, which is faster than two processes sharing two threads each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1

name_of() {  # "DIV SEED" -> fmnist-DIV or fmnist-DIV-sSEED
    local div=$1 seed=$2
    if [ "$seed" = 0 ]; then echo "fmnist-$div"; else echo "fmnist-$div-s$seed"; fi
}

train_one() {
    local div=$1 seed=$2 dir
    dir=runs/ckpt/$(name_of "$div" "$seed")
    if [ -f "$dir/model/model.safetensors" ]; then
        echo "$dir: trained"
    elif [ -f "$dir/options.json" ]; then
        "$PY" -m training.run --resume "$dir" --no-progress >> "$dir.log" 2>&1
    else
        mkdir -p runs/ckpt
        "$PY" -m training.run --preset fmnist-cpu --div "$div" --seed "$seed" --run-dir "$dir" --no-progress \
            >> "$dir.log" 2>&1
    fi
}

curve_one() {  # the same recipe continued from the shipped model, a model folder every 1000 steps (issue 17)
    local div=$1 dir=runs/curve/fmnist-$1
    if [ -f "$dir/options.json" ]; then
        "$PY" -m training.run --resume "$dir" --max-steps "${CURVE_STEPS:-10000}" --no-progress >> "$dir.log" 2>&1
    else
        mkdir -p runs/curve
        "$PY" -m training.run --preset fmnist-cpu --div "$div" --seed 0 --warm-start "checkpoints/fmnist-$div" \
            --max-steps "${CURVE_STEPS:-10000}" --snapshot-every 1000 --run-dir "$dir" --no-progress >> "$dir.log" 2>&1
    fi
}

case "${1:-}" in
    curve)
        shift
        export -f curve_one
        export PY
        printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'curve_one {}'
        ;;
    train)
        shift
        export -f train_one name_of
        export PY
        printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'train_one {}'
        ;;
    ship)
        shift
        for short in "$@"; do
            run=runs/ckpt/fmnist-$short/model
            [ -f "$run/model.safetensors" ] || { echo "error: $run is not a finished run" >&2; exit 1; }
            "$PY" -m training.tune "$run" --write
            rm -rf "checkpoints/fmnist-$short"
            cp -r "$run" "checkpoints/fmnist-$short"
        done
        ;;
    evaluate)
        "$PY" -m training.evaluate --all --fid-samples 5000 --rejection --restoration 500 \
            --out docs/results.json --markdown docs/results.md --grids docs/samples --write-cards
        ;;
    *)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac

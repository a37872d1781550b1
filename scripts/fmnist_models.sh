#!/usr/bin/env bash
# Train, tune and ship the Fashion-MNIST models (issues 5 and 17), then evaluate them all with one protocol.
#
#   scripts/fmnist_models.sh train "js 0" "js 1" "cd 1"   # train (or resume) each "DIV SEED", one thread each
#   scripts/fmnist_models.sh curve js cd                  # continue stage 1 to CURVE_STEPS (10000), same recipe
#   scripts/fmnist_models.sh mixture js cd                # stage 2: 500 steps against the PCA-mixture start
#   scripts/fmnist_models.sh ship js-mixture cd-mixture   # tune on the val split, copy into checkpoints/
#   scripts/fmnist_models.sh evaluate                     # the results table, grids and cards
#
# The shipped fmnist-js and fmnist-cd are two-stage (docs/recipe.md, issue 17): stage 1 is `train` (preset
# fmnist-cpu, 3000 steps) continued by `curve` to 10 000 steps; `mixture` continues its 10 000-step snapshot for
# 500 steps with the preset fmnist-cpu-mixture; `ship X-mixture` installs that as fmnist-X, with generation's
# Langevin steps and per-step noise tuned too. Runs live in runs/ckpt/fmnist-<div>[-s<seed>|-mixture] (seed 0
# has no suffix); a killed run resumes from its last checkpoint when trained again, and a finished one is
# skipped. JOBS=2 trains two at a time (the 2-core machine); each process uses one thread, which is faster than
# two processes sharing two threads each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1
source scripts/train_or_resume.sh

name_of() {  # "DIV SEED" -> fmnist-DIV or fmnist-DIV-sSEED
    local div=$1 seed=$2
    if [ "$seed" = 0 ]; then echo "fmnist-$div"; else echo "fmnist-$div-s$seed"; fi
}

train_one() {
    train_or_resume "runs/ckpt/$(name_of "$1" "$2")" --preset fmnist-cpu --div "$1" --seed "$2"
}

mixture_one() {  # stage 2 of the shipped recipe, warm-started from seed 0's stage 1 at 10 000 steps
    local div=$1 dir=runs/ckpt/fmnist-$1-mixture stage1=runs/curve/fmnist-$1/snapshots/step_010000
    if [ ! -f "$dir/options.json" ] && [ ! -f "$stage1/model.safetensors" ]; then
        echo "error: $stage1 missing: run \`curve $div\` first" >&2
        return 1
    fi
    train_or_resume "$dir" --preset fmnist-cpu-mixture --div "$div" --seed 0 \
        --warm-start "$stage1" --max-steps 10500
}

curve_one() {  # stage 1's recipe continued from its 3000-step model, a model folder every 1000 steps (issue 17);
    # not train_or_resume: a finished curve continues when CURVE_STEPS grows
    local div=$1 dir=runs/curve/fmnist-$1
    if [ -f "$dir/options.json" ]; then
        "$PY" -m training.run --resume "$dir" --max-steps "${CURVE_STEPS:-10000}" --no-progress >> "$dir.log" 2>&1
    else
        mkdir -p runs/curve
        "$PY" -m training.run --preset fmnist-cpu --div "$div" --seed 0 --warm-start "runs/ckpt/fmnist-$div/model" \
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
    mixture)
        shift
        export -f mixture_one train_or_resume
        export PY
        printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'mixture_one {}'
        ;;
    train)
        shift
        export -f train_one name_of train_or_resume
        export PY
        printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'train_one {}'
        ;;
    ship)
        shift
        for short in "$@"; do
            run=runs/ckpt/fmnist-$short/model
            [ -f "$run/model.safetensors" ] || { echo "error: $run is not a finished run" >&2; exit 1; }
            name=fmnist-${short%-mixture}
            if [ "$short" != "${short%-mixture}" ]; then  # short chains from the mixture: their length and noise too
                "$PY" -m training.tune "$run" --generation-steps 25 50 75 --generation-noise 0 0.0025 0.005 --write
            else
                "$PY" -m training.tune "$run" --write
            fi
            rm -rf "checkpoints/$name"
            cp -r "$run" "checkpoints/$name"
        done
        ;;
    evaluate)
        "$PY" -m training.evaluate --all --fid-samples 5000 --rejection --restoration 500 \
            --out docs/results.json --markdown docs/results.md --grids docs/samples --write-cards
        ;;
    *)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac

#!/usr/bin/env bash
# Train, tune and ship the photo models: the photo-cpu preset (dsm: photo-dsm), one thread each, resumable.
#
#   scripts/photo_models.sh train js cd        # train (or resume) runs/ckpt/photo-<div>, two at a time
#   scripts/photo_models.sh ship js cd dsm     # tune every task on the validation crops, copy into checkpoints/
#
# Needs Debian's photographs: apt-get install mate-backgrounds plasma-workspace-wallpapers (training only).
# A killed run resumes from its last checkpoint (every 100 steps) when trained again; a finished one is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1
source scripts/train_or_resume.sh

train_one() {
    local preset=photo-cpu
    [ "$1" = dsm ] && preset=photo-dsm  # score matching: a noise-conditional energy (docs/photo_training.md)
    train_or_resume "runs/ckpt/photo-$1" --preset "$preset" --div "$1" --seed 0
}

case "${1:-}" in
    train)
        shift
        export -f train_one train_or_resume
        export PY
        printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'train_one {}'
        ;;
    ship)
        shift
        for div in "$@"; do
            run=runs/ckpt/photo-$div/model
            [ -f "$run/model.safetensors" ] || { echo "error: $run is not a finished run" >&2; exit 1; }
            "$PY" -m training.tune "$run" --n 8 --write
            for task in deblur upscale; do
                "$PY" -m bench.photo_inverse --tune-model "$run" --task "$task" --n-crops 8 --rounds 1 --write --no-progress
            done
            rm -rf "checkpoints/photo-$div"
            cp -r "$run" "checkpoints/photo-$div"
        done
        ;;
    *)
        sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac

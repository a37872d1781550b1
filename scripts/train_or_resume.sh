# Sourced by the model scripts (fmnist_models.sh, photo_models.sh): one training run per folder, resumable.
#
#   train_or_resume DIR ARGS...   # training.run ARGS --run-dir DIR; a killed run resumes, a finished one is skipped
#
# Uses $PY; the log goes to DIR.log.
train_or_resume() {
    local dir=$1
    shift
    if [ -f "$dir/model/model.safetensors" ]; then
        echo "$dir: trained"
    elif [ -f "$dir/options.json" ]; then
        "$PY" -m training.run --resume "$dir" --no-progress >> "$dir.log" 2>&1
    else
        mkdir -p "$(dirname "$dir")"
        "$PY" -m training.run "$@" --run-dir "$dir" --no-progress >> "$dir.log" 2>&1
    fi
}

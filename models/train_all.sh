#!/bin/sh
# Train the zoo models one after another, at the lowest CPU priority, into models/zoo/.
#
#   models/train_all.sh DATA_DIR [NAME ...]      (default: every model, MNIST ones first)
#
# Each training logs to $LOG_DIR/train-NAME.log (default /tmp).  A model whose card already
# exists in models/zoo/ is skipped (unless FORCE=1), so the script can be rerun to finish an
# interrupted queue.
# The epochs and schedules below are the ones recorded in the shipped model cards.  F then
# takes a second stage, FINETUNE below: 6 more epochs starting from the first stage's export.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
DATA=${1:?usage: train_all.sh DATA_DIR [NAME ...]}
shift
LOG_DIR=${LOG_DIR:-/tmp}
OUT=$ROOT/models/zoo
[ $# -gt 0 ] || set -- A B C D E30 E100 Fsmall F

settings() {
    case $1 in
        A)      echo "--epochs 20 --schedule onecycle" ;;
        B)      echo "--epochs 40 --schedule onecycle --augmentation shift" ;;
        C)      echo "--epochs 20 --schedule onecycle" ;;
        D)      echo "--epochs 30 --schedule onecycle --augmentation shift" ;;
        E30)    echo "--epochs 40 --schedule onecycle" ;;
        E100)   echo "--epochs 40 --schedule onecycle" ;;
        Fsmall) echo "--epochs 20 --schedule onecycle --init he" ;;
        F)      echo "--epochs 16 --schedule onecycle --init he --batchnorm --lr 2e-3" ;;
        *)      echo "unknown model $1" >&2; return 1 ;;
    esac
}

finetune() {
    case $1 in
        F) echo "--epochs 6 --schedule cosine --lr 2e-4" ;;
    esac
}

for name in "$@"; do
    if [ -f "$OUT/$name.json" ] && [ "${FORCE:-0}" != 1 ]; then
        echo "$name: $OUT/$name.json exists, skipping"
        continue
    fi
    args=$(settings "$name") || exit 2
    echo "$name: training ($args), log $LOG_DIR/train-$name.log"
    # shellcheck disable=SC2086
    if ! nice -n 19 "$PY" -m dashc.models.train "$name" --data-dir "$DATA" --seed 0 \
        --threads 2 --out "$OUT" $args >"$LOG_DIR/train-$name.log" 2>&1; then
        echo "$name: training failed, see $LOG_DIR/train-$name.log"
        continue
    fi
    stage2=$(finetune "$name")
    if [ -n "$stage2" ]; then
        cp "$OUT/$name.onnx" "$LOG_DIR/$name-stage1.onnx"
        cp "$OUT/$name.json" "$LOG_DIR/$name-stage1.json"
        echo "$name: fine-tuning ($stage2), log $LOG_DIR/train-$name-stage2.log"
        # shellcheck disable=SC2086
        nice -n 19 "$PY" -m dashc.models.train "$name" --data-dir "$DATA" --seed 0 \
            --threads 2 --out "$OUT" --start-from "$LOG_DIR/$name-stage1.onnx" $stage2 \
            >"$LOG_DIR/train-$name-stage2.log" 2>&1 \
            || echo "$name: fine-tuning failed, see $LOG_DIR/train-$name-stage2.log"
    fi
done

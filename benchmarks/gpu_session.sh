#!/usr/bin/env bash
# The command lines of a benchmark session on a lent GPU (the plan: benchmarks/README.md).
#
# Steps marked "here" run on the development machine; steps marked "device" are the `command`
# of one device `run` call (they run in the repository root of the device's copy of the tree).
#
#   bash benchmarks/gpu_session.sh prepare                   # here: packs, wheels, what each call carries
#   bash benchmarks/gpu_session.sh setup                     # device: install carried wheels, check GPU + deps
#   bash benchmarks/gpu_session.sh table TABLE DATASET [protocol.py options...]   # device: one table, one dataset
#   bash benchmarks/gpu_session.sh collect FILES_DIR         # here: bundles -> benchmarks/results -> docs/RESULTS.md
#
# Environment (defaults): SHARED_DATA (../shared/data beside the checkout), PYTHON (.venv/bin/python
# here, python3 on the device), SITE (/tmp/fermetric-site: where carried wheels are installed on the
# device; it lives as long as the machine stays warm, 30 s after a call).
set -euo pipefail
cd "$(dirname "$0")/.."

MIB=$((1024 * 1024))
LIMIT=$((64 * MIB))                       # what one device call may carry, working tree included
SITE="${SITE:-/tmp/fermetric-site}"
DATASETS=(fer2013 ferplus ckplus48)

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

size_of() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }

prepare() {                               # here
    local py="${PYTHON:-.venv/bin/python}" shared="${SHARED_DATA:-../shared/data}"
    mkdir -p .pack
    for ds in "${DATASETS[@]}"; do
        if [[ -f ".pack/$ds.npz" ]]; then echo "have .pack/$ds.npz"; continue; fi
        local extra=()
        [[ "$ds" == ferplus ]] && extra=(--label-mode majority)
        "$py" benchmarks/pack_dataset.py "$ds=$shared/$ds" --out ".pack/$ds.npz" "${extra[@]}"
    done
    # Evaluation needs pytorch-metric-learning (and faiss, unless the engine can do without it);
    # the device image has neither. Same versions as here, built for the device's Python 3.12.
    local pml faiss
    pml=$("$py" -c "import importlib.metadata as m; print(m.version('pytorch-metric-learning'))")
    faiss=$("$py" -c "import importlib.metadata as m; print(m.version('faiss-cpu'))")
    local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
                     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    [[ -n "$(ls .whl/pml/*.whl 2>/dev/null)" ]] || "$py" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl/pml "pytorch-metric-learning==$pml"
    [[ -n "$(ls .whl/faiss/*.whl 2>/dev/null)" ]] || "$py" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl/faiss "faiss-cpu==$faiss"
    # What travels: the working tree (tracked + untracked, not ignored) plus the carried paths.
    local tree
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    printf '%-44s %8s\n' "device call carries" "MiB (limit 64)"
    for carry in ".whl" ".whl/pml .pack/ckplus48.npz" ".whl .pack/ckplus48.npz" \
                 ".whl/pml .pack/fer2013.npz" ".whl/pml .pack/ferplus.npz"; do
        # shellcheck disable=SC2086
        local total=$((tree + $(size_of $carry)))
        printf '%-44s %8s %s\n' "tree + $carry" "$(awk "BEGIN { printf \"%.1f\", $total / $MIB }")" \
            "$( ((total > LIMIT)) && echo 'TOO LARGE' || echo ok)"
    done
}

setup() {                                 # device
    mkdir -p "$SITE"
    if compgen -G ".whl/*/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*/*.whl
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    check_deps
}

check_deps() {                            # device: can this machine evaluate (k-NN, MAP@R, NMI)?
    export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    python3 - <<'EOF' || { echo "gpu_session: evaluation dependencies are missing here: run 'setup' in a call that carries .whl first (this machine must still be warm), or carry .whl/pml if faiss is optional" >&2; exit 4; }
import numpy as np, torch, fermetric
from fermetric.engine import metrics as M
x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
y = np.arange(40) % 4
M.knn_accuracy(x, y), M.retrieval_metrics(x, y)
print(f"fermetric {fermetric.__version__}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO GPU'}")
EOF
}

table() {                                 # device
    [[ $# -ge 2 ]] || usage
    local name="$1" ds="$2"
    shift 2
    : "${OUT:?OUT is unset: run this through the device tool}"
    if compgen -G ".whl/pml/*.whl" >/dev/null && ! PYTHONPATH="$SITE" python3 -c "import pytorch_metric_learning" 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/pml/*.whl
    fi
    [[ "$name" == throughput ]] || check_deps   # throughput runs do not evaluate
    export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    # Results live in runs/ (git-ignored, so kept between calls while the machine is warm); the
    # results that travelled from here in benchmarks/results count as done too.
    mkdir -p runs/results
    if [[ -d benchmarks/results ]]; then cp -rn benchmarks/results/. runs/results/; fi
    set +e
    python3 benchmarks/protocol.py --table "$name" --data "packed=.pack/$ds.npz" --out runs/results \
        --work runs/benchmarks --bundle "$OUT/$name-$ds.jsonl" "$@" 2>&1 | tee -a "$OUT/$name-$ds.log"
    local status=${PIPESTATUS[0]}
    set -e
    return "$status"
}

collect() {                               # here
    [[ $# -eq 1 && -d "$1" ]] || { echo "usage: gpu_session.sh collect FILES_DIR (the run's files_at)" >&2; exit 2; }
    local bundles=("$1"/*.jsonl)
    [[ -e "${bundles[0]}" ]] || { echo "gpu_session: no *.jsonl bundle in $1" >&2; exit 2; }
    "${PYTHON:-.venv/bin/python}" benchmarks/make_tables.py --import "${bundles[@]}"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    setup) shift; setup "$@" ;;
    table) shift; table "$@" ;;
    collect) shift; collect "$@" ;;
    *) usage ;;
esac

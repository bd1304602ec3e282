#!/usr/bin/env bash
# Every GPU check of the project in one run (the device machine: CUDA torch preinstalled; missing pure-Python
# packages carried as wheels in .whl/). Writes JSON files under ${OUT:-bench/out}; prints a one-line summary each.
set -uo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

# 1. exact MST and GRTD on CUDA (new and previous Boruvka, agreement with the CPU path)
timeout 110 python3 bench/mst.py --gpu-only > "$OUT/mst_gpu.json" 2> "$OUT/mst_gpu.err"; echo "mst rc=$?"
# 2. CUDA correctness tests of the scoring core (GRTD/MST torch paths against numpy)
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/transferability/test_mst.py tests/transferability/test_grtd.py \
  > "$OUT/pytest_gpu.txt" 2>&1; echo "pytest rc=$?"; tail -n 3 "$OUT/pytest_gpu.txt"
# 3. extraction + scoring with ResEnc-L on 10 cases of 160^3 (and 1 case), bf16 autocast
timeout 200 python3 bench/extract.py --gpu-only --gpu-small-cases --resencl-cases 10 --resencl-shape 160 160 160 --warm \
  > "$OUT/extract_gpu.json" 2> "$OUT/extract_gpu.err"; echo "extract rc=$?"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ("mst_gpu.json", "extract_gpu.json"):
    try:
        d = json.loads((out / name).read_text())
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(name, "unreadable:", exc); continue
    print(name, json.dumps(d.get("summary", d))[:4000])
PY

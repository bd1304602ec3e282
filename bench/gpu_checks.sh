#!/usr/bin/env bash
# Every GPU check of the project (the device machine: CUDA torch preinstalled; the missing packages carried
# as wheels in .whl/, fetched here by bench/gpu_wheels.sh). Writes JSON files under ${OUT:-bench/out}; prints
# a one-line summary each. Two parts, each sized for one device call of at most 10 minutes:
#   bash bench/gpu_checks.sh core   # MST/GRTD on CUDA, CUDA tests, ResEnc-L extraction (1 and 10 cases of 160^3)
#   bash bench/gpu_checks.sh zoo    # 7 ResEnc-L checkpoints ranked through the service, prefetch off vs on
#   bash bench/gpu_checks.sh validation   # the validation benchmark's v2 truth on the GPU, as far as one call goes
#   bash bench/gpu_checks.sh        # core and zoo (about 10 minutes: may not fit one call)
set -uo pipefail
PART=${1:-all}
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

if [ "$PART" = core ] || [ "$PART" = all ]; then
# 1. exact MST and GRTD on CUDA (new and previous Boruvka, agreement with the CPU path)
timeout 110 python3 bench/mst.py --gpu-only > "$OUT/mst_gpu.json" 2> "$OUT/mst_gpu.err"; echo "mst rc=$?"
# 2. CUDA correctness tests of the scoring core (GRTD/MST torch paths against numpy)
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/transferability/test_mst.py tests/transferability/test_grtd.py \
  > "$OUT/pytest_gpu.txt" 2>&1; echo "pytest rc=$?"; tail -n 3 "$OUT/pytest_gpu.txt"
# 3. extraction + scoring with ResEnc-L on 10 cases of 160^3 (and 1 case), bf16 autocast
#    (1 and 10 cases: peak GPU memory and worker RSS against the number of cases)
timeout 240 python3 bench/extract.py --gpu-only --gpu-small-cases --resencl-cases 1 10 --resencl-shape 160 160 160 --warm \
  > "$OUT/extract_gpu.json" 2> "$OUT/extract_gpu.err"; echo "extract rc=$?"
fi

if [ "$PART" = zoo ] || [ "$PART" = all ]; then
# 4. the zoo through the real service: API + one worker, POST /v1/rankings to succeeded, 7 ResEnc-L on 10 cases of
#    160^3, prefetch off then on; `first_ranking_s` is the cold first call of a fresh worker. PostgreSQL + Redis
#    when their servers are on this machine (the CUDA image has none: carry them or accept the embedded default,
#    which the JSON records under options).
ZOO_DB=()
if command -v redis-server >/dev/null && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start >/dev/null 2>&1 || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  ZOO_DB=(--database-url "postgresql+psycopg://postgres@127.0.0.1:5432/test" --broker-url "redis://127.0.0.1:6379/5")
fi
# ZOO_ARGS overrides the zoo's size (a CPU smoke run of this script: ZOO_ARGS="--device cpu --models 2 --cases 2 --shape 40 40 40")
read -r -a ZOO_SIZE <<< "${ZOO_ARGS:---device cuda --models 7 --cases 10 --shape 160 160 160}"
timeout 420 python3 bench/zoo.py --zoo resencl "${ZOO_SIZE[@]}" "${ZOO_DB[@]}" \
  --work-dir /tmp/bench-zoo > "$OUT/zoo_gpu.json" 2> "$OUT/zoo_gpu.err"; echo "zoo rc=$?"
fi
if [ "$PART" = validation ]; then
# 5. protocol v2's truth on CUDA (bench/validation, profile v2 with --device cuda): the committed CPU-built zoo,
#    records keyed by device. Resumable: VALIDATION_OUT (default results/validation/v2-cuda, in the carried working
#    tree) holds records.jsonl.gz, exported every 2 minutes, so a later call goes on where this one stopped. It never
#    scores a sealed task (the planner and the worker both refuse before a committed freeze).
VOUT=${VALIDATION_OUT:-results/validation/v2-cuda}
timeout "${VALIDATION_TIMEOUT:-540}" python3 -m bench.validation run --profile v2 --device cuda --jobs 1 --out "$VOUT" \
  --cache /tmp/validation-cache --checkpoint-min 2 > "$OUT/validation_gpu.log" 2>&1; echo "validation rc=$?"
mkdir -p "$OUT/validation-v2-cuda" && cp "$VOUT"/records.jsonl.gz "$OUT/validation-v2-cuda/" 2>/dev/null
tail -n 3 "$OUT/validation_gpu.log"
fi
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ("mst_gpu.json", "extract_gpu.json", "zoo_gpu.json"):
    try:
        if not (out / name).exists():
            continue
        d = json.loads((out / name).read_text())
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(name, "unreadable:", exc); continue
    print(name, json.dumps(d.get("summary", d))[:4000])
PY

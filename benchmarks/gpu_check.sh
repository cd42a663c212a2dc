#!/usr/bin/env bash
# A GPU check for a lent GPU, at most GPU_CHECK_BUDGET_S seconds (default 480: 8 minutes), install
# included. From the repository root:
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: print every step, compile the Python parts, run nothing
#   bash benchmarks/gpu_check.sh --cpu-smoke  # anywhere, ~10 min on 2 busy cores: every step on the CPU on tiny
#                                             # worlds (gloo for nccl, onnx embeddings): checks the script itself
#   GPU_CHECK_SKIP_FK=1 ...                   # only the short runs (determinism, NCCL)
#
# Prints, each from a fresh `llm4cdsr` process on one GPU:
#   1. a Food x Kitchen epoch of the preset (LLM4CDSR, sampled_ce) on CUDA, with its validation and the
#      final test evaluation (both protocols, every user);
#   2. `llm4cdsr evaluate` of that run: sampled and full-ranking evaluation of all users, valid and test;
#   3. the ce objective's epoch (softmax over every kitchen item) against sampled_ce's;
#   4. bit-identity of two short runs (a 10,000-user synthetic world, one epoch) in one process with
#      torch.use_deterministic_algorithms(True) and CUBLAS_WORKSPACE_CONFIG=:4096:8;
#   5. a one-process NCCL smoke run under torchrun: all_reduce, a DistributedDataParallel step, then
#      `llm4cdsr train` inside the initialised NCCL group (the package's rank-0 and barrier paths).
#
# Data: Food x Kitchen from $DATA (default ../shared/data/food-kitchen); where it is absent, a
# synthetic world of its size (53,061 users, 8,661 food and 27,637 kitchen items), said so in the output.
# Python: $PYTHON, else .venv/bin/python if it imports llm4cdsr and torch, else a new .venv-gpu
# installed from this repository (`pip install -e .`, which needs PyPI: PyPI's Linux torch wheels carry CUDA).
# Embeddings run on the GPU (embed.backend=local, sentence-transformers). Logs: $GPU_CHECK_DIR
# (default a new folder under /tmp), one file per step.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --cpu-smoke) MODE=cpu ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run | --cpu-smoke]" >&2; exit 2 ;;
esac

BUDGET_S=${GPU_CHECK_BUDGET_S:-$([[ $MODE == cpu ]] && echo 1200 || echo 480)}
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu-check-XXXXXX)}
mkdir -p "$WORK"
DATA=${DATA:-../shared/data/food-kitchen}
export CUBLAS_WORKSPACE_CONFIG=:4096:8 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

if [[ $MODE == cpu ]]; then
  DEVICE=cpu; DIST=gloo; EMBED=onnx
  FK_USERS=1500; FK_ITEMS_A=250; FK_ITEMS_B=750; SMALL_USERS=1000  # 200 A items: 100 negatives left for every user
else
  DEVICE=cuda; DIST=nccl; EMBED=local
  FK_USERS=53061; FK_ITEMS_A=8661; FK_ITEMS_B=27637; SMALL_USERS=10000
fi

START=$SECONDS
FAILED=0
left() { echo $(( BUDGET_S - (SECONDS - START) )); }

# step NAME SECONDS_NEEDED COMMAND...: run with what is left of the budget as its timeout, log to
# $WORK/NAME.log, print its time; skipped (said so) when less than SECONDS_NEEDED is left.
step() {
  local name=$1 need=$2
  shift 2
  if [[ $MODE == dry ]]; then
    printf '+ [%s] %s\n' "$name" "$*"
    return 0
  fi
  if (( $(left) < need )); then
    echo "SKIP  $name: $(left) s of the budget left, it needs about $need s"
    FAILED=1
    return 1
  fi
  local t0=$SECONDS rc=0
  timeout "$(left)" "$@" > "$WORK/$name.log" 2>&1 || rc=$?
  if (( rc == 0 )); then
    printf 'ok    %-14s %4d s\n' "$name" $(( SECONDS - t0 ))
  else
    printf 'FAIL  %-14s exit %d after %d s; the end of %s:\n' "$name" "$rc" $(( SECONDS - t0 )) "$WORK/$name.log"
    tail -n 20 "$WORK/$name.log" | sed 's/^/      /'
    FAILED=1
  fi
  return "$rc"
}

# ----- Python ---------------------------------------------------------------------------------
PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import llm4cdsr, torch" 2>/dev/null; then
    PY=.venv/bin/python
  else
    step install 120 bash -c "python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -e ." || exit 1
    PY=.venv-gpu/bin/python
  fi
fi
CLI=("$PY" -m llm4cdsr)

# ----- the Python parts, written once (compiled in every mode) ---------------------------------
cat > "$WORK/determinism.py" <<'EOF'
"""Two one-epoch runs in one process with deterministic algorithms: are the weights bit-identical?"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

torch.use_deterministic_algorithms(True)  # before any kernel runs; CUBLAS_WORKSPACE_CONFIG is set by the caller
from llm4cdsr.cli import main  # noqa: E402

ws, device, extra = sys.argv[1], sys.argv[2], sys.argv[3:]  # extra: the overrides the workspace was built with
for name in ("det-a", "det-b"):
    rc = main(["train", "-w", ws, f"device={device}", "train.epochs=1", "train.progress=false", f"run.name={name}", *extra])
    if rc:
        sys.exit(rc)
a = load_file(str(Path(ws) / "runs" / "det-a" / "model.safetensors"))
b = load_file(str(Path(ws) / "runs" / "det-b" / "model.safetensors"))
same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b)
print(f"DETERMINISM bit-identical weights: {same} ({len(a)} tensors, largest difference {worst:.3g})")
sys.exit(0 if same else 3)
EOF

cat > "$WORK/ddp_smoke.py" <<'EOF'
"""Under torchrun (one process): the process group, all_reduce, a DDP step, then `llm4cdsr train` in it."""
import os
import sys

import torch
import torch.distributed as dist

ws, device, backend, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
dev = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if device == "cuda" else "cpu")
if dev.type == "cuda":
    torch.cuda.set_device(dev)
dist.init_process_group(backend)
x = torch.full((4,), float(dist.get_rank() + 1), device=dev)
dist.all_reduce(x)
assert torch.equal(x.cpu(), torch.full((4,), float(dist.get_world_size() * (dist.get_world_size() + 1) // 2)))
net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1).to(dev), device_ids=[dev.index] if dev.type == "cuda" else None)
loss = net(torch.randn(16, 8, device=dev)).pow(2).mean()
loss.backward()  # gradients all-reduced by DDP's hooks
print(f"DDP all_reduce ok, DDP backward ok ({backend}, world {dist.get_world_size()}, {dev})", flush=True)
from llm4cdsr.cli import main  # noqa: E402  (after the group: train runs inside it)

rc = main(["train", "-w", ws, f"device={device}", "train.epochs=1", "train.progress=false", "run.name=ddp", *extra])
dist.barrier()
dist.destroy_process_group()
print(f"DDP llm4cdsr train in the {backend} group: exit {rc}")
sys.exit(rc)
EOF

cat > "$WORK/summary.py" <<'EOF'
"""The figures of the runs, from their results.json."""
import json
import sys
from pathlib import Path

ws, label = Path(sys.argv[1]), sys.argv[2]
def results(name):
    path = ws / "runs" / name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None
print(f"--- summary ({label}) ---")
runs = {loss: results(f"epoch-{loss}") for loss in ("sampled_ce", "ce")}
for loss, r in runs.items():
    if r is None:
        print(f"{loss:>10}: no run")
        continue
    t = r["time"]
    test = r.get("test", {})
    figures = ", ".join(f"{mode} ndcg@10 {test[mode]['overall']['ndcg@10']:.4f}" for mode in ("sampled", "full")
                        if mode in test and "overall" in test[mode] and "ndcg@10" in test[mode]["overall"])
    print(f"{loss:>10}: epoch {t['train_s_per_epoch']:.1f} s, validation {t['valid_s_per_epoch']:.1f} s, "
          f"final test evaluation (both protocols, every user) {t['final_eval_s']:.1f} s; {figures}")
if all(runs.values()):
    print(f"ce / sampled_ce epoch: {runs['ce']['time']['train_s_per_epoch'] / runs['sampled_ce']['time']['train_s_per_epoch']:.2f}x")
EOF
"$PY" -m py_compile "$WORK/determinism.py" "$WORK/ddp_smoke.py" "$WORK/summary.py" || exit 2

# ----- the machine ----------------------------------------------------------------------------
echo "gpu_check ($MODE): logs in $WORK; budget $BUDGET_S s"
if [[ $MODE == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))" || exit 1
fi

# ----- Food x Kitchen (or a synthetic world of its size) -------------------------------------
FK=$WORK/fk
COMMON=(-c food-kitchen -w "$FK" "device=$DEVICE" "embed.backend=$EMBED" train.progress=false)
if [[ -f $DATA/interactions.csv && $MODE == gpu ]]; then
  LABEL="Food x Kitchen ($DATA)"
  SOURCE=("data.interactions=$(realpath "$DATA/interactions.csv")" "data.items=$(realpath "$DATA/items.csv")")
else
  LABEL="SYNTHETIC world of $FK_USERS users ($FK_ITEMS_A + $FK_ITEMS_B items; no Food x Kitchen data at $DATA)"
  SOURCE=("data.interactions=$WORK/fk-raw/interactions.csv" "data.items=$WORK/fk-raw/items.csv")
fi
echo "data: $LABEL"
if [[ ${GPU_CHECK_SKIP_FK:-0} == 1 ]]; then
  echo "SKIP  the Food x Kitchen steps (GPU_CHECK_SKIP_FK=1)"
  FAILED=1
  FK_STEPS=0
else
  FK_STEPS=1
fi
if (( FK_STEPS )) && [[ $LABEL == SYNTHETIC* ]]; then
  step synth-fk 20 "${CLI[@]}" synth --out "$WORK/fk-raw" --users "$FK_USERS" --items-a "$FK_ITEMS_A" \
    --items-b "$FK_ITEMS_B" --domains food kitchen
fi
if (( FK_STEPS )); then
  step prepare 20 "${CLI[@]}" prepare "${COMMON[@]}" "${SOURCE[@]}" --no-progress
  step embed 60 "${CLI[@]}" embed "${COMMON[@]}" "${SOURCE[@]}"
  step profile 60 "${CLI[@]}" profile "${COMMON[@]}" "${SOURCE[@]}"
  step epoch-sampled 60 "${CLI[@]}" train "${COMMON[@]}" "${SOURCE[@]}" train.epochs=1 train.loss=sampled_ce \
    run.name=epoch-sampled_ce
  step evaluate 30 "${CLI[@]}" evaluate "$FK/runs/epoch-sampled_ce"
  [[ $MODE == dry || ! -f $WORK/evaluate.log ]] || grep -E "valid|test|ndcg@10" "$WORK/evaluate.log" | head -n 10 | sed 's/^/      /'
  step epoch-ce 60 "${CLI[@]}" train "${COMMON[@]}" "${SOURCE[@]}" train.epochs=1 train.loss=ce run.name=epoch-ce
fi

# ----- short runs on a small synthetic world: determinism, NCCL ------------------------------
SMALL=$WORK/small
SMALL_COMMON=(-w "$SMALL" "device=$DEVICE" "embed.backend=$EMBED" "data.synth.users=$SMALL_USERS"
              "data.synth.items_a=$(( SMALL_USERS / 5 ))" "data.synth.items_b=$(( 3 * SMALL_USERS / 10 ))")
step small-setup 60 "${CLI[@]}" run "${SMALL_COMMON[@]}" "run.stages=[prepare,embed,profile]"
step determinism 40 "$PY" "$WORK/determinism.py" "$SMALL" "$DEVICE" "${SMALL_COMMON[@]:3}"
[[ $MODE == dry || ! -f $WORK/determinism.log ]] || grep -h "^DETERMINISM" "$WORK/determinism.log" | sed 's/^/      /'
step ddp 40 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "$WORK/ddp_smoke.py" "$SMALL" "$DEVICE" "$DIST" \
  "${SMALL_COMMON[@]:3}"
[[ $MODE == dry || ! -f $WORK/ddp.log ]] || grep -h "^DDP" "$WORK/ddp.log" | sed 's/^/      /'

if [[ $MODE != dry ]]; then
  "$PY" "$WORK/summary.py" "$FK" "$LABEL ($DEVICE)"
  echo "gpu_check: $(( SECONDS - START )) s in all; $([[ $FAILED == 0 ]] && echo 'every step passed' || echo 'SOME STEPS FAILED OR WERE SKIPPED')"
fi
exit "$FAILED"

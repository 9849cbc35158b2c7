#!/usr/bin/env bash
# pivotmt and a real Slurm (Debian's slurmctld, slurmd and munge on this machine, started
# here as a one-node cluster and stopped at the end; shared/docs/REFERENCE.md §15):
#   - ablate --emit-sbatch writes a 3-task job array and a merge job that depends on it;
#     submitted, they produce the same outputs as a single run; the time limit comes from
#     the run plan unless given;
#   - a task killed mid-way (its row log torn) is resumed by resubmitting the array;
#   - --shard auto reads the array task from Slurm's environment.
# Needs root and the packages (scripts/setup.sh installs them); exits 77 (skipped) without.
# usage: slurm.sh PIVOTMT SHARED_DIR
set -euo pipefail
PIVOTMT=$(readlink -f "$1")
SHARED=$(readlink -f "$2")
for tool in slurmctld slurmd sbatch squeue sinfo munged munge unmunge; do
  command -v "$tool" >/dev/null || { echo "slurm test: $tool is not installed (scripts/setup.sh installs it)"; exit 77; }
done
[[ $(id -u) -eq 0 ]] || { echo "slurm test: needs root to run the daemons"; exit 77; }
W=$(mktemp -d)
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [[ -n ${KEEP:-} ]] || rm -rf "$W"
}
trap cleanup EXIT
export HF_HUB_OFFLINE=1

# munge: reuse a working daemon, else start one as the munge user.
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
  [[ -f /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
  runuser -u munge -- munged --force
  sleep 1
  PIDS+=("$(cat /run/munge/munged.pid)")
  (munge -n | unmunge) | grep -q "STATUS: *Success"
fi

HOST=$(hostname -s)
MEM=$(awk '/MemTotal/ {print int($2 / 1024) - 1024}' /proc/meminfo)
mkdir -p "$W/state" "$W/spool"
cat >"$W/slurm.conf" <<CONF
ClusterName=pivotmt-test
SlurmctldHost=$HOST
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$W/slurm.conf
slurmctld -f "$SLURM_CONF"
for _ in $(seq 50); do [[ -s $W/slurmctld.pid ]] && break; sleep 0.2; done
PIDS+=("$(cat "$W/slurmctld.pid")")
slurmd -f "$SLURM_CONF"
for _ in $(seq 50); do [[ -s $W/slurmd.pid ]] && break; sleep 0.2; done
PIDS+=("$(cat "$W/slurmd.pid")")
for _ in $(seq 100); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.3; done
sinfo -h -o %t | grep -q idle || { cat "$W/slurmctld.log" "$W/slurmd.log" >&2; echo "slurm did not come up" >&2; exit 1; }

wait_jobs() {  # until the queue is empty (or 180 s); a failed dependency fails at once
  for _ in $(seq 360); do
    q=$(squeue -h -o "%i %T %r")
    [[ -z $q ]] && return 0
    if grep -q DependencyNeverSatisfied <<<"$q"; then
      echo "a job of the array failed:" >&2
      tail -n 20 "$W"/run/shards/slurm-*.log >&2 || true
      return 1
    fi
    sleep 0.5
  done
  squeue >&2; echo "jobs did not finish" >&2; return 1
}

POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,40p "$POOL" >"$W/data/train.jsonl"
sed -n 41,50p "$POOL" >"$W/data/test.jsonl"
cd "$W"
ARGS=(ablate --data data --model "$SHARED/fixtures/models/tiny-tower" -k 0 1 --max-new-tokens 8 --greedy)
"$PIVOTMT" -q "${ARGS[@]}" --out single >/dev/null 2>&1

# The job array and its merge.
"$PIVOTMT" -q "${ARGS[@]}" --out run --emit-sbatch jobs --sbatch-tasks 3 --sbatch-cpus 1 --sbatch-mem 1G --sbatch-time 00:10:00 >emit.txt
grep -q "ablate.sbatch (3 array tasks" emit.txt
grep -q "^#SBATCH --array=1-3$" jobs/ablate.sbatch
grep -q "dependency=afterok" jobs/submit.sh
# Without --sbatch-time the limit comes from the run plan (planned for a stated H200, so the
# figure does not depend on this machine: a tiny model's seconds plus the 15 minutes of margin).
"$PIVOTMT" -q "${ARGS[@]}" --out planned --emit-sbatch jobs2 --sbatch-tasks 2 --sbatch-cpus 1 --plan-device h200 >/dev/null
grep -q "^#SBATCH --time=00:15:0[0-9]$" jobs2/ablate.sbatch
bash jobs/submit.sh >submit.txt
grep -q "submitted: array job [0-9]* (3 shards), merge job [0-9]*" submit.txt
wait_jobs
for t in 1 2 3; do test -f "run/shards/$t-of-3/ablation_config.json"; done
for k in 0 1; do cmp "single/k_$k/results_k$k.csv" "run/k_$k/results_k$k.csv"; done
diff <(cut -d, -f1-5,7 single/ablation_summary.csv) <(cut -d, -f1-5,7 run/ablation_summary.csv)

# Task 2 killed mid-way: its k = 1 log holds one of its 3 rows and half of the next; the merged
# outputs are gone. Resubmitting the array resumes task 2 only and merges again.
L=run/shards/2-of-3/k_1/rows.jsonl
head -1 "$L" >cut && printf '{"i": 4, "prom' >>cut && cp cut "$L"
rm run/ablation_summary.csv run/k_1/results_k1.csv
bash jobs/submit.sh >/dev/null
wait_jobs
grep -q '"rows_generated":2,' <(tr -d ' ' <"$(ls -t run/shards/slurm-*_2.log | head -1)")
grep -q '"rows_generated":0,' <(tr -d ' ' <"$(ls -t run/shards/slurm-*_1.log | head -1)")
for k in 0 1; do cmp "single/k_$k/results_k$k.csv" "run/k_$k/results_k$k.csv"; done

# --shard auto inside an array task: the task's slice.
cat >auto.sbatch <<JOB
#!/bin/bash
#SBATCH --array=4-5
#SBATCH --output=$W/auto-%a.log
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
cd $W
exec $PIVOTMT -q ${ARGS[*]} --shard auto --out auto-\$SLURM_ARRAY_TASK_ID
JOB
sbatch auto.sbatch >/dev/null
wait_jobs
grep -q '"shard":\[1,2\]' <(tr -d ' \n' <auto-4/ablation_config.json)
grep -q '"shard":\[2,2\]' <(tr -d ' \n' <auto-5/ablation_config.json)
"$PIVOTMT" -q ablate --merge auto-4 auto-5 --out auto >/dev/null 2>&1
for k in 0 1; do cmp "single/k_$k/results_k$k.csv" "auto/k_$k/results_k$k.csv"; done
# Outside an array, auto is an error that says so.
if "$PIVOTMT" -q "${ARGS[@]}" --shard auto --out x 2>err; then exit 1; fi
grep -q "not a Slurm array task" err
echo OK

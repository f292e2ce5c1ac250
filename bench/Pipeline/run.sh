#!/usr/bin/env bash
# bench/Pipeline.md: evaluation and fine-tuning throughput through the stage pipeline (1 and 3 silos in one process)
# against the same model in process. Usage: bench/Pipeline/run.sh minilm|tinylm [pipeline-bench options…]
# Environment: OMP_WAIT_POLICY (passed through; PASSIVE stops libgomp's spinning, see ../Pipeline.md), NO_BUILD=1.
# Writes bench/results/DATE-pipeline-WHAT.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
[[ "${NO_BUILD:-0}" == 1 ]] || dotnet build bench/Pipeline/Shears.PipelineBench.csproj -c Release -nologo -v quiet
what="$1"; shift
out="bench/results/$(date -u +%Y-%m-%d-%H%M)-pipeline-$what${OMP_WAIT_POLICY:+-omp-${OMP_WAIT_POLICY,,}}.txt"
{
  echo "command: bench/Pipeline/run.sh $what $*${OMP_WAIT_POLICY:+ (OMP_WAIT_POLICY=$OMP_WAIT_POLICY)}"
  echo "commit: $(git rev-parse --short HEAD)"
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/^Mem:/ { print $2 " GiB" }'), dotnet $(dotnet --version)"
  "$here/bin/Release/net10.0/linux-x64/pipeline-bench" "$what" "$@" 2>&1 | grep --line-buffered -Ev '^\s*(info|warn|dbug): |^\s+(Orleans|Microsoft)\.' || true
  echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"

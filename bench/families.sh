#!/bin/bash
# Every kind of run on small generated checkpoints of each LLaMA-family model type Shears computes, with shapes the
# other benchmarks do not use (head_dim apart from hidden/heads, one key/value head, tied embeddings, odd vocabulary,
# widths that no group size divides, f16/f32/bf16, sliding windows shorter than the evaluation's sequences). Prints one
# line per run (exit code, seconds, the run's last line), then, for every run that removed something, the removed
# model's own perplexity (a second run with --sparsity 0 reads it back) against the masked model's the run reported.
#   bench/families.sh WORKDIR            (about 3 minutes on two cores)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: bench/families.sh WORKDIR}
mkdir -p "$work" && work=$(cd "$work" && pwd)
cd "$root"
dotnet build client/Shears.Client -c Release -nologo -v quiet >/dev/null && dotnet build bench/Shears.Bench -c Release -nologo -v quiet >/dev/null || exit 1
rm -rf "$work/shears" && cp -r client/Shears.Client/bin/Release/net10.0/linux-x64 "$work/shears"
bench="dotnet $root/bench/Shears.Bench/bin/Release/net10.0/linux-x64/Shears.Bench.dll"
shears="$work/shears/shears"

echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cd "$work"
rm -rf m-* out log && mkdir -p out log
$bench checkpoint m-qwen3 --hidden 96 --heads 4 --kv-heads 2 --head-dim 32 --intermediate 200 --vocab 1000 --layers 4 --model-type qwen3 --tie --max-shard-bytes 300000 >/dev/null
$bench checkpoint m-qwen2 --hidden 80 --heads 5 --kv-heads 1 --intermediate 216 --vocab 999 --layers 4 --model-type qwen2 --sliding-window 8 --dtype f32 >/dev/null
$bench checkpoint m-mistral --hidden 128 --heads 8 --kv-heads 2 --intermediate 344 --vocab 2048 --layers 3 --model-type mistral --sliding-window 16 --dtype f16 >/dev/null
$bench checkpoint m-llama --hidden 192 --heads 3 --intermediate 500 --vocab 2048 --layers 3 >/dev/null || exit 1
# Token ids below the smallest vocabulary: 8 sequences of 24 for evaluation, calibration and fine-tuning each.
for name in eval cal ft; do
  awk -v seed=$(cksum <<< "$name" | cut -d' ' -f1) 'BEGIN{srand(seed); printf "["; for(s=0;s<8;s++){ if(s) printf ","; printf "[";
    for(t=0;t<24;t++){ if(t) printf ","; printf "%d", int(rand()*990)} printf "]"} printf "]\n"}' > $name.json
done

run() {
  local name=$1 model=$2; shift 2
  local t0=$(date +%s.%N)
  "$shears" run --model m-$model --out out/$name-$model "$@" > log/$name-$model.txt 2>&1
  local rc=$?
  printf "%-8s %-11s rc=%d %5.1f s  %s\n" $model $name $rc "$(echo "$(date +%s.%N) - $t0" | bc)" \
    "$(grep -v '^\s*$' log/$name-$model.txt | tail -1 | sed "s#$work/##g" | cut -c1-110)"
  echo "  shears run --model m-$model --out out/$name-$model $*" >> log/commands.txt
}
for m in qwen3 qwen2 mistral llama; do
  run magnitude  $m --sparsity 0.5 --scope global
  run wanda      $m --sparsity 0.5 --method wanda --scope layer --calibration cal.json --eval eval.json
  run sgpt-gptq  $m --sparsity 0.5 --method sparsegpt --scope layer --calibration cal.json --quantize W4A16 --group-size 32 --quant-method gptq
  run neurons-rm $m --sparsity 0.25 --pattern neurons --scope layer --remove --eval eval.json
  run heads-rm   $m --sparsity 0.4 --pattern heads --scope layer --remove --eval eval.json
  run layers-rm  $m --sparsity 0.34 --pattern layers --remove --calibration cal.json --eval eval.json
  run 2:4-w8     $m --sparsity 0.5 --pattern 2:4 --scope layer --quantize W8A16
  run w4-asym    $m --sparsity 0.5 --quantize W4A16_ASYM
  run ft-hidden  $m --sparsity 0.5 --finetune-steps 2 --finetune-data ft.json --batch 2 --distill hidden --eval eval.json
  run owl        $m --sparsity 0.5 --scope owl --method wanda --calibration cal.json
  run rows-3     $m --sparsity 0.5 --pattern rows --scope layer --rounds 3 --schedule cubic --eval eval.json
done
echo "# removed models read back: perplexity of the written model / the masked model's in the run's report"
for m in qwen3 qwen2 mistral llama; do
  for f in neurons-rm heads-rm layers-rm; do
    masked=$(grep '^round' log/$f-$m.txt | tail -1 | grep -o 'perplexity [0-9.]*' | cut -d' ' -f2)
    rm -rf out/readback
    readback=$("$shears" run --model out/$f-$m --out out/readback --sparsity 0 --eval eval.json 2>&1 | grep '│ dense' | awk -F'│' '{print $7}' | xargs)
    printf "%-8s %-11s %s / %s  %s\n" $m $f "$readback" "$masked" "$(grep -o '"num_hidden_layers": [0-9]*\|"intermediate_size": [0-9]*\|"num_attention_heads": [0-9]*\|"max_window_layers": [0-9]*' out/$f-$m/config.json | tr '\n' ' ')"
  done
done
echo "# dense perplexity of each generated checkpoint as Shears computes it (the wanda runs' dense row); on a machine with"
echo "# PyTorch and transformers, bench/reference/torch_reference.py families WORKDIR/eval.json WORKDIR/m-* gives transformers' own"
for m in qwen3 qwen2 mistral llama; do
  printf "%-8s %s\n" $m "$(grep '│ dense' log/wanda-$m.txt | awk -F'│' '{print $7}' | xargs)"
done

#!/usr/bin/env bash
# Baseline: the same image started by hand (docker run + curl loop), no deploykit.
set -u
PORT=${PORT:-18080}
docker rm -f dk-manual >/dev/null 2>&1
t0=$(date +%s.%N)
docker run -d --name dk-manual -p 127.0.0.1:$PORT:8000 --shm-size 1g \
  -e VLLM_CPU_KVCACHE_SPACE=1 -e VLLM_CPU_OMP_THREADS_BIND=auto \
  -v ${DEPLOYKIT_CACHE:-/tmp/dk/cache}/smollm2-135m-instruct:/models/smollm2-135m-instruct:ro \
  ${IMAGE:-deploykit/vllm-cpu:0.32.0} python -m vllm.entrypoints.openai.api_server \
  --model /models/smollm2-135m-instruct --served-model-name smollm2-135m-instruct \
  --host 0.0.0.0 --port 8000 --max-model-len 2048 --max-num-seqs 4 --dtype bfloat16 "$@" >/dev/null
until curl -sf localhost:$PORT/v1/models | grep -q smollm2; do
  sleep 1
  [ "$(docker inspect -f '{{.State.Running}}' dk-manual)" = true ] || { echo DIED; docker logs dk-manual 2>&1 | tail -30; exit 1; }
done
t1=$(date +%s.%N)
ans=$(curl -sf localhost:$PORT/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16,"temperature":0}')
t2=$(date +%s.%N)
echo "ready_s=$(echo "$t1-$t0" | bc) first_answer_s=$(echo "$t2-$t0" | bc)"
echo "$ans"

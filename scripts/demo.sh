#!/usr/bin/env bash
# Set everything up and show coord at work: a ClickHouse-like writer merges and deletes parts on a Docker
# volume while `coord backup --policy clickhouse` archives it with the shipped policy (strategy snapshot: the
# writer is paused while its tree is hard-linked, then the links are archived while it runs again).
# The writer's files are all immutable once written, as ClickHouse's parts are (ATOMIC_LOG=1: its log is rewritten
# and renamed, not appended to in place), which is what a snapshot needs.
# Archives land in ./demo-backups. The writer and its volume are removed at the end (--keep leaves them).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=${1:-}
scripts/bootstrap.sh

volume=coord-demo_clickhouse-data
writer=coord-demo-clickhouse
docker rm -f "$writer" >/dev/null 2>&1 || true
docker volume create --label coord.demo=1 "$volume" >/dev/null
docker run -d --name "$writer" --label coord.demo=1 -v "$volume:/data" -e ATOMIC_LOG=1 \
  coord-test/busybox:latest sh /workloads/clickhouse_churn.sh >/dev/null
cleanup() {
  if [ "$keep" != --keep ]; then
    docker rm -f "$writer" >/dev/null 2>&1 || true
    docker volume rm "$volume" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "demo: writer '$writer' is inserting and merging parts on volume '$volume'; letting it churn for 5 s"
sleep 5
echo "demo: coord backup --policy clickhouse --dest ./demo-backups"
status=0
.venv/bin/coord backup --policy clickhouse --dest ./demo-backups || status=$?
echo "demo: the writer is still $(docker inspect -f '{{.State.Status}}' "$writer"); coord exited $status"
latest=$(ls -t demo-backups/"$volume"/*.manifest.json 2>/dev/null | head -n 1 || true)
[ -n "$latest" ] && echo "demo: manifest: $latest"
exit "$status"

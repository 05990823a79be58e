#!/bin/sh
# A ClickHouse-like writer for tests: the on-disk behaviour of a MergeTree table, without ClickHouse.
#
# Inserts write a part under tmp_insert_*, rename it to <partition>_<n>_<n>_0 (immutable from then on);
# every MERGE_EVERY inserts, the newest level-0 parts are merged into one part <partition>_<min>_<max>_1
# written under tmp_merge_*, renamed, and the source parts are deleted: the deletions tar reports as
# "File removed before we read it". Each part's data.bin holds its block numbers, one per line, so a test can
# prove from an archive which inserts it holds. /data/writer.log gets "<n>" after each committed insert:
# appended in place by default, or (ATOMIC_LOG=1) rewritten to a new file and renamed, so that every file is
# immutable once written, like ClickHouse's parts (what the snapshot strategy relies on).
# Files are written under /data/tmp first (scratch space, as ClickHouse writes parts under tmp_*).
set -eu
trap 'exit 0' TERM INT  # PID 1 in a container gets no default handlers: without this, docker stop waits
root=${DATA_DIR:-/data}
uuid=${TABLE_UUID:-2632a5fb-f759-4d05-824b-dddcb78faff3}
merge_every=${MERGE_EVERY:-4}
files_per_part=${FILES_PER_PART:-6}
delay=${INSERT_DELAY:-0}
atomic_log=${ATOMIC_LOG:-0}
table=$root/store/${uuid%"${uuid#???}"}/$uuid
mkdir -p "$table" "$root/metadata/default" "$root/tmp"
echo "ATTACH TABLE _ UUID '$uuid' (n UInt64) ENGINE = MergeTree ORDER BY n" > "$root/metadata/default/events.sql"
echo 1 > "$table/format_version.txt"
n=$(cat "$root/writer.count" 2>/dev/null || echo 0)
write_part() { # dir first last
  rm -rf "$1"  # a part half-written when the container was stopped last time
  mkdir "$1"
  seq "$2" "$3" > "$1/data.bin"
  i=0
  while [ "$i" -lt "$files_per_part" ]; do echo "column $i of blocks $2..$3" > "$1/col$i.bin"; i=$((i + 1)); done
  echo "$2 $3" > "$1/checksums.txt"
}
while :; do
  n=$((n + 1))
  write_part "$table/tmp_insert_202601_${n}_${n}_0" "$n" "$n"
  mv "$table/tmp_insert_202601_${n}_${n}_0" "$table/202601_${n}_${n}_0"
  echo "$n" > "$root/tmp/writer.count.new" && mv "$root/tmp/writer.count.new" "$root/writer.count"
  if [ "$atomic_log" = 1 ]; then
    { cat "$root/writer.log" 2>/dev/null || true; echo "$n"; } > "$root/tmp/writer.log.new"
    mv "$root/tmp/writer.log.new" "$root/writer.log"
  else
    echo "$n" >> "$root/writer.log"
  fi
  if [ $((n % merge_every)) -eq 0 ]; then
    first=$((n - merge_every + 1))
    merged=202601_${first}_${n}_1
    write_part "$table/tmp_merge_$merged" "$first" "$n"
    mv "$table/tmp_merge_$merged" "$table/$merged"
    k=$first
    while [ "$k" -le "$n" ]; do rm -rf "$table/202601_${k}_${k}_0"; k=$((k + 1)); done
  fi
  [ "$delay" = 0 ] || sleep "$delay"
done

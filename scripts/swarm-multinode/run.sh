#!/usr/bin/env bash
# The multi-node run of issue 18 (docs/swarm.md, "Multi-node run"): three Docker engines inside containers on a
# bridge network made here, joined into one swarm (node1 and node2 managers, node3 a WORKER), a service with a volume
# on each node, one backup per node to a shared rclone server (webdav, on the outer host), claim contention between
# two nodes on one global service, the worker's coord refused without a gateway and working through one; then
# compose/stack.yml itself deployed (with scripts/swarm-multinode/stack.override.yml and env variables for what the
# run needs: the coord image built from this checkout, a one-minute schedule, a stop policy, the stack's replicated
# service pinned to the worker) until the worker's coord daemon backed up that service's volume with stop through
# the stack's gateway (scaled to 0 and back, claim taken and released: the gateway's log shows it), the fleet
# report counting what every node published, and, with one manager drained, the same through the other manager's
# gateway. Everything it creates is labelled and removed at the end (node
# containers and their engines' data, the network, the node cgroup directories); the outer engine keeps the coord
# image it built.
# Usage: scripts/swarm-multinode/run.sh    (needs: the coord-test/busybox image, rclone; builds the coord image)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
label=coord.multinode=1
prefix=coordmn
network=$prefix-net
nodes=(node1 node2 node3)
work=$(mktemp -d /tmp/coord-multinode.XXXXXX)
rclone=${COORD_RCLONE:-$repo/.venv/bin/rclone}
server_pid=

cleanup() {
  set +e
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  for node in "${nodes[@]}"; do docker rm -f -v "$prefix-$node" >/dev/null 2>&1; done
  for _ in 1 2 3 4 5; do  # the node containers' endpoints may take a moment to go
    docker network rm "$network" >/dev/null 2>&1 && break
    docker network inspect "$network" >/dev/null 2>&1 || break
    sleep 2
  done
  for node in "${nodes[@]}"; do  # cgroup v1: one directory per controller; v2: one
    find /sys/fs/cgroup -maxdepth 2 -type d -name "$prefix-$node" 2>/dev/null | sort -r | while read -r dir; do
      find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

say() { echo "== $*"; }
on() { local node=$1; shift; docker exec "$prefix-$node" "$@"; }
gateway_env=()
coord_on() {  # coord from this checkout (PYTHONPATH shadows the image's), named by its node; node3 (the worker)
  local node=$1; shift  # reaches services through the gateway once one runs
  local extra=()
  [ "$node" = node3 ] && extra=("${gateway_env[@]}")
  docker exec -e PYTHONPATH=/coord-src/src -e COORD_NODE="$node" -e RCLONE_CONFIG=/shared/rclone.conf \
    "${extra[@]}" "$prefix-$node" coord "$@"
}

say "the coord image of this checkout"
# scripts/build-coord-image.sh also tags it coord:latest; put that tag back where it was (other runs on this
# engine use it), the stack names the digest tag
previous_latest=$(docker image inspect -f '{{.Id}}' coord:latest 2>/dev/null || true)
coord_image=$("$repo/scripts/build-coord-image.sh")
[ -n "$previous_latest" ] && docker tag "$previous_latest" coord:latest
echo "$coord_image"

say "gathering docker.io and its dependencies as .deb files"
mkdir -p "$work/context/debs"
for package in containerd docker.io dmsetup iptables libdevmapper1.02.1 libip4tc2 libip6tc2 libmnl0 \
  libnetfilter-conntrack3 libnfnetlink0 libnftnl11 libxtables12 netbase runc tini; do
  cached=$(ls /var/cache/apt/archives/"${package}"_*.deb 2>/dev/null | head -1 || true)
  if [ -n "$cached" ]; then cp "$cached" "$work/context/debs/"; else (cd "$work/context/debs" && apt-get download "$package" 2>/dev/null); fi
done
cp "$here/Dockerfile" "$work/context/"
image=coord-test/swarm-node:$(cat "$here/Dockerfile" | sha256sum | cut -c1-12)
docker image inspect "$image" >/dev/null 2>&1 || docker build -q -t "$image" --label "$label" "$work/context" >/dev/null
say "image $image"

# a network of an earlier run whose removal did not finish (ours: its name and label)
if [ -n "$(docker network ls -q --filter "name=^$network\$" --filter "label=$label")" ]; then docker network rm "$network" >/dev/null; fi
docker network create --label "$label" "$network" >/dev/null
gateway=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "$network")
mkdir -p "$work/shared/target" "$work/shared/barrier"
port=$((20000 + RANDOM % 20000))
"$rclone" serve webdav "$work/shared/target" --addr "$gateway:$port" >"$work/webdav.log" 2>&1 &
server_pid=$!
printf '[fleet]\ntype = webdav\nurl = http://%s:%s/\nvendor = other\n' "$gateway" "$port" >"$work/shared/rclone.conf"
mkdir -p "$work/policies"
printf 'targets:\n  fleet: {rclone: "fleet:coord-fleet"}\n' >"$work/policies/_defaults.yaml"

for node in "${nodes[@]}"; do
  docker run -d --name "$prefix-$node" --hostname "$node" --label "$label" --network "$network" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v /var/lib/docker -v "$repo:/coord-src:ro" -v "$work/shared:/shared" \
    "$image" dockerd --cgroup-parent="/$prefix-$node" --host unix:///var/run/docker.sock >/dev/null
done
for node in "${nodes[@]}"; do
  for _ in $(seq 120); do on "$node" docker info >/dev/null 2>&1 && break; sleep 0.5; done
  on "$node" docker info --format "$node: engine {{.ServerVersion}}, storage {{.Driver}}"
  docker save coord-test/busybox:latest "$coord_image" | docker exec -i "$prefix-$node" docker load -q >/dev/null
done

say "one swarm: node1 and node2 managers, node3 a worker"
address() { docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$prefix-$1"; }
on node1 docker swarm init --advertise-addr "$(address node1)" >/dev/null
on node2 docker swarm join --token "$(on node1 docker swarm join-token -q manager)" "$(address node1):2377" >/dev/null
on node3 docker swarm join --token "$(on node1 docker swarm join-token -q worker)" "$(address node1):2377" >/dev/null
on node1 docker node ls --format '{{.Hostname}} {{.Status}} {{if .ManagerStatus}}{{.ManagerStatus}}{{else}}worker{{end}}'
on node3 docker info --format 'node3: Swarm.ControlAvailable={{.Swarm.ControlAvailable}}'

say "a service with a volume on each node, and one global service"
strategies=(stop pause snapshot)
for index in 0 1 2; do
  node=${nodes[$index]}
  on node1 docker service create -d -q --name "app-$node" --replicas 1 --constraint "node.hostname==$node" \
    --mount "type=volume,source=data-$node,target=/data" coord-test/busybox:latest \
    sh -c 'hostname >> /data/tasks.log; exec sleep 3600' >/dev/null
done
on node1 docker service create -d -q --name agent --mode global --mount type=volume,source=agent-data,target=/data \
  coord-test/busybox:latest sh -c 'hostname >> /data/tasks.log; exec sleep 3600' >/dev/null
for _ in $(seq 240); do
  [ "$(on node1 docker service ls --format '{{.Replicas}}' | grep -c -E '^([0-9]+)/\1$')" = 4 ] && break; sleep 0.5
done
on node1 docker service ls --format '{{.Name}} {{.Mode}} {{.Replicas}}'

for index in 0 1 2; do
  node=${nodes[$index]}
  policies=$work/shared/policies-$node
  mkdir -p "$policies" && cp "$work/policies/_defaults.yaml" "$policies/"
  printf 'volumes: [data-%s]\nstrategy: %s\nstop_timeout: 5\n' "$node" "${strategies[$index]}" >"$policies/app.yaml"
  printf 'volumes: [agent-data]\nstrategy: pause\n' >"$policies/agent.yaml"
done

say "the worker without a gateway: a volume used by a task fails, saying what to set"
coord_on node3 plan --policies-dir /shared/policies-node3 --policy app | sed 's/^/   /' && exit_code=0 || exit_code=$?
echo "   (exit $exit_code)"
[ "$exit_code" = 1 ] || { echo "expected the worker's plan to fail without a gateway"; exit 1; }

say "coord gateway on node1 (a manager), by hand; node3's coord goes through it from now on"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/shared/gateway-token"
docker exec -d -e PYTHONPATH=/coord-src/src "$prefix-node1" sh -c "coord gateway --listen $(address node1) \
  --port 8733 --token-file /shared/gateway-token 2>/shared/gateway-by-hand.log"
for _ in $(seq 120); do grep -q "listening on" "$work/shared/gateway-by-hand.log" 2>/dev/null && break; sleep 0.5; done
sed 's/^/   /' "$work/shared/gateway-by-hand.log"
gateway_env=(-e "COORD_SWARM_GATEWAY=http://$(address node1):8733" -e COORD_SWARM_GATEWAY_TOKEN_FILE=/shared/gateway-token)

say "one backup per node to the shared rclone server"
for index in 0 1 2; do
  node=${nodes[$index]}
  echo "-- $node: plan"
  coord_on "$node" plan --policies-dir "/shared/policies-$node" | sed 's/^/   /'
  echo "-- $node: backup"
  coord_on "$node" backup --policies-dir "/shared/policies-$node" | sed 's/^/   /'
done
on node1 docker service ls --format '{{.Name}} {{.Mode}} {{.Replicas}}'

say "claim contention: node1 and node2 claim the global service agent at the same moment"
agent=$(on node1 docker service inspect -f '{{.ID}}' agent)
claimers=()
for node in node1 node2; do
  docker exec -e PYTHONPATH=/coord-src/src:/coord-src "$prefix-$node" python3 /coord-src/tests/swarm_claimer.py \
    "$agent" "$node" "/tmp/claim-state" /shared/barrier /shared/hold >"$work/claim-$node.out" 2>"$work/claim-$node.err" &
  claimers+=($!)
done
for _ in $(seq 240); do [ "$(ls "$work/shared/barrier" | grep -c ready)" = 2 ] && break; sleep 0.25; done
touch "$work/shared/barrier/go"
for _ in $(seq 240); do [ -s "$work/claim-node1.out" ] && [ -s "$work/claim-node2.out" ] && break; sleep 0.25; done
for node in node1 node2; do echo "   $node: $(head -1 "$work/claim-$node.out")"; done
echo "-- node3 backs up the agent's volume while the winner holds the claim"
coord_on node3 backup --policies-dir /shared/policies-node3 --policy agent | sed 's/^/   /' || true
touch "$work/shared/hold"
wait "${claimers[@]}"
on node1 docker service inspect -f 'claim label after the release: {{index .Spec.Labels "coord.claim"}}' agent
echo "-- after the release"
coord_on node3 backup --policies-dir /shared/policies-node3 --policy agent | sed 's/^/   /'

say "the stack deployed: compose/stack.yml, its gateway on every manager, coord global on every node"
# compose/stack.yml itself, with scripts/swarm-multinode/stack.override.yml (the stack's replicated service pinned to
# the worker) and env variables (the image, a one-minute schedule, a stop policy, the shared server as `offsite`).
# One line differs, and only here: this kernel has no IPsec ESP (CONFIG_INET_ESP), so the nested engines cannot
# build an encrypted overlay network; the copy deployed drops `encrypted` (checked below: the only change).
cp -r "$repo/compose" "$work/shared/compose"
sed -i '/^    driver_opts: {encrypted: "true"}$/d' "$work/shared/compose/stack.yml"
changed=$(diff "$repo/compose/stack.yml" "$work/shared/compose/stack.yml" | grep -c '^[<>]' || true)
[ "$changed" = 1 ] || { echo "expected exactly the encrypted line removed, $changed lines differ"; exit 1; }
mkdir -p "$work/shared/stack"
printf '[offsite]\ntype = webdav\nurl = http://%s:%s/\nvendor = other\n' "$gateway" "$port" >"$work/shared/stack/rclone.conf"
printf 'volumes: [coord-fleet_clickhouse-data]\nstrategy: stop\nstop_timeout: 5\n' >"$work/shared/stack/clickhouse.yaml"
on node1 docker secret create coord-gateway-token /shared/gateway-token >/dev/null
docker exec -e COORD_IMAGE="$coord_image" -e COORD_SCHEDULE="* * * * *" \
  -e COORD_POLICY_CLICKHOUSE=/shared/stack/clickhouse.yaml -e COORD_RCLONE_CONFIG=/shared/stack/rclone.conf \
  "$prefix-node1" docker stack deploy --resolve-image never -c /shared/compose/stack.yml \
  -c /coord-src/scripts/swarm-multinode/stack.override.yml coord-fleet
echo "-- waiting until node3's daemon published a backup of the stack's service volume (up to 6 minutes)"
task_of() {  # the container of a stack service's task running on a node (empty when none runs there)
  on "$1" docker ps -q -f "label=com.docker.swarm.service.name=coord-fleet_$2"
}
manifests() {  # node volume status of every manifest on the shared server
  find "$work/shared/target" -name '*.manifest.json' -exec python3 -c '
import json, sys
for path in sys.argv[1:]:
    m = json.load(open(path))
    print(m.get("node"), m.get("volume"), m.get("status"))' {} +
}
for _ in $(seq 360); do
  manifests | grep -q '^node3 coord-fleet_clickhouse-data ' && break
  sleep 1
done
on node1 docker stack ps coord-fleet --format '{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}' | sed 's/^/   /'
for node in "${nodes[@]}"; do
  task=$(task_of "$node" coord)
  echo "-- $node: the coord task's daemon log"
  on "$node" docker logs "$task" 2>&1 | grep -v next-run | tail -n 8 | sed 's/^/   /'
  on "$node" docker logs "$task" 2>&1 | grep -F 'volume: failed' | sed 's/^/   earlier failure: /' || true
done
echo "-- the manifests on the shared server (node, volume, status)"
manifests | sort | uniq -c | sed 's/^/   /'
echo "-- the stack's gateway log (node1 or node2)"
on node1 docker service logs --raw coord-fleet_gateway 2>&1 | tail -n 12 | sed 's/^/   /'
on node1 docker service logs --raw coord-fleet_gateway >"$work/gateway.log" 2>&1
for change in "coord.claim set (node node3" "replicas 1 -> 0" "replicas 0 -> 1" "coord.claim removed"; do
  grep "node 'node3'" "$work/gateway.log" | grep -qF "$change" || { echo "the gateway's log lacks: $change"; exit 1; }
done
on node1 docker service inspect -f 'coord-fleet_clickhouse after the run: {{.Spec.Mode.Replicated.Replicas}} replica(s), claim label: "{{index .Spec.Labels "coord.claim"}}"' coord-fleet_clickhouse

say "the fleet report (from node1's coord task: the stack's policies and rclone secret)"
# Every node's coord backs up a volume of the same name (the stack mounts it on every node; node1's and node2's are
# empty): each node's archives go to its own namespace on the shared target (`_nodes/<node>/`), so every node's
# archive is counted and none overwrites another's; each node's run records (`_runs/<node>/`) give its runs and
# success rate. Wait until every node published (the worker's came first, above).
for _ in $(seq 180); do
  [ "$(manifests | grep -c ' coord-fleet_clickhouse-data ')" -ge 3 ] && \
    [ "$(manifests | grep ' coord-fleet_clickhouse-data ' | cut -d' ' -f1 | sort -u | wc -l)" -ge 3 ] && break
  sleep 1
done
task=$(task_of node1 coord)
on node1 docker exec "$task" coord report --fleet | sed 's/^/   /'
on node1 docker exec "$task" coord report --fleet --json >"$work/fleet.json"
on node1 docker exec "$task" coord report --fleet --html /tmp/fleet.html
on node1 docker exec "$task" cat /tmp/fleet.html >"$work/fleet.html"
echo "   the fleet report as HTML: $(wc -c <"$work/fleet.html") bytes"
grep -q node3 "$work/fleet.html" || { echo "the fleet page does not name node3"; exit 1; }
python3 - "$work/fleet.json" "${nodes[@]}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
counted = {node: 0 for node in sys.argv[2:]}
runs = {node: [0, 0] for node in sys.argv[2:]}
for row in report["rows"]:
    if row["volume"] == "coord-fleet_clickhouse-data" and row["node"] in counted:
        counted[row["node"]] += row["archives"]
        runs[row["node"]][0] += row["runs"]
        runs[row["node"]][1] += row["ok"] + row["warnings"]
print("   archives of the stack's volume per node, as the fleet report counts them:", counted)
print("   runs of the stack's volume per node (runs, ok or warning):", runs)
if report["errors"]:
    sys.exit(f"the fleet report could not read: {report['errors']}")
missing = [node for node, count in counted.items() if count < 1 or runs[node][0] < 1]
if missing:
    sys.exit(f"the fleet report counts no archive or run of the stack's volume for {missing}")
PY

say "a gateway on every manager: node1 drained, the worker's next scheduled stop goes through node2's gateway"
# compose/stack.yml runs the gateway global on the managers, and `gateway` resolves (dnsrr) to every task: a manager
# that is gone costs coord a refused connection, not the claim. Drain node1 (its tasks stop; it stays a manager) and
# require the worker's daemon, on its one-minute schedule, to claim and scale its service to 0 and back again, now
# logged by node2's gateway, and to publish a good archive.
gateway_log() {  # the log of the gateway task on a node
  local task
  task=$(task_of "$1" gateway)
  [ -n "$task" ] && on "$1" docker logs "$task" 2>&1
}
gateway_nodes() {  # the nodes the gateway service runs on now
  on node1 docker service ps coord-fleet_gateway --filter desired-state=running --format '{{.Node}}' | sort | tr '\n' ' '
}
worker_scaled() { gateway_log "$1" | grep "node 'node3'" | grep -cF "replicas 0 -> 1" || true; }
node3_task=$(task_of node3 coord)
echo "   gateway tasks: $(gateway_nodes)"
echo "   'gateway' resolves, in node3's coord task, to: $(on node3 docker exec "$node3_task" python3 -c \
  "import socket; print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo('gateway', 8733)})))")"
scaled_before=$(worker_scaled node2)
node3_archives() { find "$work/shared/target" -path '*/_nodes/node3/coord-fleet_clickhouse-data/*' -name '*.manifest.json' | sort; }
node3_archives >"$work/node3-before-drain"
on node1 docker node update --availability drain node1 >/dev/null
for _ in $(seq 120); do
  [ -z "$(task_of node1 gateway)" ] && break; sleep 0.5
done
[ -z "$(task_of node1 gateway)" ] || { echo "node1's gateway still runs"; exit 1; }
echo "   node1 drained at $(date -u +%H:%M:%S): gateway tasks now on $(gateway_nodes)"
for _ in $(seq 240); do
  [ "$(worker_scaled node2)" -gt "$scaled_before" ] && [ -n "$(node3_archives | comm -13 "$work/node3-before-drain" -)" ] && break
  sleep 1
done
echo "   node2's gateway, from node3, since the drain:"
gateway_log node2 | grep "node 'node3'" | tail -n 4 | sed 's/^/     /'
[ "$(worker_scaled node2)" -gt "$scaled_before" ] || { echo "node2's gateway never scaled node3's service back after the drain"; exit 1; }
fresh=$(node3_archives | comm -13 "$work/node3-before-drain" - | tail -n 1)
[ -n "$fresh" ] || { echo "node3 published no archive after the drain"; exit 1; }
python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("   node3 after the drain:", m["volume"], m["status"], m.get("verdict")); sys.exit(m["status"] not in ("ok", "warning"))' "$fresh"
on node1 docker service inspect -f 'coord-fleet_clickhouse after it: {{.Spec.Mode.Replicated.Replicas}} replica(s), claim label: "{{index .Spec.Labels "coord.claim"}}"' coord-fleet_clickhouse | sed 's/^/   /'
echo "== the worker's coord backed up the stack's service with stop through the gateway, on either manager's"

#!/usr/bin/env bash
# The multi-node run of issue 18 (docs/swarm.md, "Multi-node run"): three Docker engines inside containers on a
# bridge network made here, joined into one swarm (three managers), a service with a volume on each node, one
# backup per node to a shared rclone server (webdav, on the outer host), claim contention between two nodes on one
# global service, then the stack deployed (a variant of compose/stack.yml: the coord image built from this checkout
# as a global daemon, a one-minute schedule, the shared server as target) until every node's daemon published a
# backup there, and the fleet report counting what every node published (checked: at least one archive of the
# stack's volume per node). Everything it creates is labelled and removed at the end (node containers and their
# engines' data, the network, the node cgroup directories); the outer engine keeps the coord image it built.
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
  docker network rm "$network" >/dev/null 2>&1
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
coord_on() {  # coord from this checkout (PYTHONPATH shadows the image's), named by its node
  local node=$1; shift
  docker exec -e PYTHONPATH=/coord-src/src -e COORD_NODE="$node" -e RCLONE_CONFIG=/shared/rclone.conf \
    "$prefix-$node" coord "$@"
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

say "one swarm of three managers"
address() { docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$prefix-$1"; }
on node1 docker swarm init --advertise-addr "$(address node1)" >/dev/null
token=$(on node1 docker swarm join-token -q manager)
for node in node2 node3; do on "$node" docker swarm join --token "$token" "$(address node1):2377" >/dev/null; done
on node1 docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'

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

say "one backup per node to the shared rclone server"
for index in 0 1 2; do
  node=${nodes[$index]}
  policies=$work/shared/policies-$node
  mkdir -p "$policies" && cp "$work/policies/_defaults.yaml" "$policies/"
  printf 'volumes: [data-%s]\nstrategy: %s\nstop_timeout: 5\n' "$node" "${strategies[$index]}" >"$policies/app.yaml"
  printf 'volumes: [agent-data]\nstrategy: pause\n' >"$policies/agent.yaml"
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

say "the stack deployed: coord as a global daemon on every node, a service with a volume pinned to each node"
# A variant of compose/stack.yml: the same coord service (global, on managers, COORD_NODE and hostname from the
# node, policies from a Docker config, the rclone config from a Docker secret), with a one-minute schedule, the
# shared webdav server as target, and host mode (the node's /var/lib/docker/volumes mounted, COORD_VOLUMES_ROOT
# empty) so that one policy set with a glob serves every node: each node's daemon finds only its own volume. Host
# networking: the tasks reach the server through the node's own network (no overlay network is needed), and their
# hostname is the node's.
stack=$work/shared/stack
mkdir -p "$stack"
printf 'targets:\n  fleet: {rclone: "fleet:coord-fleet"}\n' >"$stack/_defaults.yaml"
printf 'volumes: ["coord-fleet_data-node*"]\nstrategy: pause\n' >"$stack/fleet.yaml"
{
  echo 'version: "3.8"'  # Engine 20.10's docker stack deploy needs it (reads a file without it as version 1.0)
  echo "services:"
  for node in "${nodes[@]}"; do
    cat <<YAML
  web-$node:
    image: coord-test/busybox:latest
    command: ["sh", "-c", "hostname >> /data/tasks.log; date >> /data/tasks.log; exec sleep 3600"]
    volumes: ["data-$node:/data"]
    networks: [hostnet]
    deploy:
      placement: {constraints: ["node.hostname == $node"]}
YAML
  done
  cat <<YAML
  coord:
    image: $coord_image
    command: ["daemon"]
    environment:
      COORD_NODE: "{{.Node.Hostname}}"
      COORD_SCHEDULE: "* * * * *"
      COORD_POLICIES_DIR: /run/coord-policies
      COORD_VOLUMES_ROOT: ""
      RCLONE_CONFIG: /run/secrets/rclone-config
    configs:
      - {source: policy-fleet, target: /run/coord-policies/fleet.yaml}
      - {source: policy-defaults, target: /run/coord-policies/_defaults.yaml}
    secrets: [rclone-config]
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
      - /var/lib/docker/volumes:/var/lib/docker/volumes
      - coord-state:/var/lib/coord
    networks: [hostnet]
    deploy:
      mode: global
      placement: {constraints: ["node.role == manager"]}
networks:
  hostnet: {external: true, name: host}
configs:
  policy-fleet: {file: ./fleet.yaml}
  policy-defaults: {file: ./_defaults.yaml}
secrets:
  rclone-config: {file: /shared/rclone.conf}
volumes:
YAML
  for node in "${nodes[@]}"; do echo "  data-$node: {name: coord-fleet_data-$node}"; done
  echo "  coord-state: {name: coord-fleet_coord-state}"
} >"$stack/stack.yml"
on node1 docker stack deploy --resolve-image never -c /shared/stack/stack.yml coord-fleet
echo "-- waiting until each node's daemon published a backup of its volume to the shared server"
published() { ls "$work/shared/target/coord-fleet/coord-fleet_data-$1" 2>/dev/null | grep -c '\.manifest\.json$' || true; }
for _ in $(seq 360); do
  done_nodes=0
  for node in "${nodes[@]}"; do
    if [ "$(published "$node")" -ge 1 ]; then done_nodes=$((done_nodes + 1)); fi
  done
  [ "$done_nodes" = 3 ] && break
  sleep 1
done
on node1 docker stack ps coord-fleet --format '{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}' | sed 's/^/   /'
for node in "${nodes[@]}"; do
  task=$(on "$node" docker ps -q -f label=com.docker.swarm.service.name=coord-fleet_coord)
  echo "-- $node: the coord task's daemon log"
  on "$node" docker logs "$task" 2>&1 | tail -n 8 | sed 's/^/   /'
  echo "   published: $(ls "$work/shared/target/coord-fleet/coord-fleet_data-$node" 2>/dev/null | tr '\n' ' ')"
done

say "the fleet report (from node1's coord task: the stack's policies and rclone secret)"
task=$(on node1 docker ps -q -f label=com.docker.swarm.service.name=coord-fleet_coord)
on node1 docker exec "$task" coord report --fleet
on node1 docker exec "$task" coord report --fleet --json >"$work/fleet.json"
python3 - "$work/fleet.json" "${nodes[@]}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
counted = {node: 0 for node in sys.argv[2:]}
for row in report["rows"]:
    if row["volume"] == f"coord-fleet_data-{row['node']}" and row["node"] in counted:
        counted[row["node"]] += row["archives"]
print("   archives of the stack's volume per node, as the fleet report counts them:", counted)
missing = [node for node, archives in counted.items() if archives < 1]
if missing:
    sys.exit(f"the fleet report counts no archive of the stack's volume for {', '.join(missing)}")
PY
echo "== every node's daemon published at least one backup, and the fleet report counts them"

#!/usr/bin/env bash
# How long kube-apiserver needs from start to /readyz against an etcd whose
# every exchange is delayed (docs/benchmarks.md, "Where the lab's assembly
# time goes"). Shows that its start is a chain of etcd round trips: the
# time grows by about 320 round trips' worth of delay.
#
#   bash ci/bench/apiserver-etcd-latency.sh [DELAY_MS_EACH_WAY ...]   (default: 0 25 100)
#
# Runs on loopback only (ports 23790, 23799, 23800, 16443); needs the test
# tools (`ci/install-deps.sh`): etcd and the Kubernetes binaries under
# ${MUSTER_TOOLS:-/opt/muster-test}, plus openssl, curl and python3.
set -euo pipefail
tools=${MUSTER_TOOLS:-/opt/muster-test}
etcd_bin=$tools/etcd/usr/bin/etcd
apiserver=$tools/kubernetes/bin/kube-apiserver
delays=("$@")
[ ${#delays[@]} -gt 0 ] || delays=(0 25 100)

work=$(mktemp -d /tmp/apiserver-etcd-latency.XXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# Serving certificate, client CA and service-account key for the apiserver.
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj /CN=bench-ca -days 1 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=kube-apiserver 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" > ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 1 -extfile ext 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

# A TCP proxy that forwards each chunk DELAY ms after it arrived, in order.
cat > delay.py <<'EOF'
import asyncio, sys, time
LISTEN, TARGET, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000

async def pipe(reader, writer):
    queue = asyncio.Queue()
    async def send():
        while True:
            arrived, data = await queue.get()
            if data is None:
                writer.close()
                return
            wait = arrived + DELAY - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
    sender = asyncio.create_task(send())
    while True:
        data = await reader.read(65536)
        queue.put_nowait((time.monotonic(), data or None))
        if not data:
            break
    await sender

async def handle(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", TARGET)
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                         return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()

asyncio.run(main())
EOF

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

for delay in "${delays[@]}"; do
    rm -rf etcd-data
    "$etcd_bin" --data-dir etcd-data \
        --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
        --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
        --initial-cluster default=http://127.0.0.1:23800 > etcd.log 2>&1 &
    etcd_pid=$!
    python3 delay.py 23799 23790 "$delay" &
    proxy_pid=$!
    pids=("$etcd_pid" "$proxy_pid")
    sleep 1.5
    started=$(date +%s.%N)
    "$apiserver" --etcd-servers=http://127.0.0.1:23799 --secure-port=16443 \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
        --tls-cert-file=srv.crt --tls-private-key-file=srv.key --client-ca-file=ca.crt \
        --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range=10.96.0.0/12 --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction --enable-bootstrap-token-auth=true \
        --endpoint-reconciler-type=lease --profiling=false --allow-privileged=true \
        > apiserver.log 2>&1 &
    api_pid=$!
    pids+=("$api_pid")
    until curl -skf https://127.0.0.1:16443/readyz >/dev/null 2>&1; do
        if ! kill -0 "$api_pid" 2>/dev/null; then
            echo "kube-apiserver exited; its log:" >&2
            tail -20 apiserver.log >&2
            exit 1
        fi
        sleep 0.2
    done
    ready=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
    metrics=$(curl -s http://127.0.0.1:23790/metrics)
    commits=$(awk '/^etcd_server_proposals_committed_total/ {print $2}' <<<"$metrics")
    ranges=$(awk '/^etcd_mvcc_range_total/ {print $2}' <<<"$metrics")
    echo "etcd delayed ${delay} ms each way: /readyz after ${ready} s; kube-apiserver $(cpu_s "$api_pid") s CPU; etcd ${commits} commits, ${ranges} reads"
    kill "$api_pid" "$proxy_pid" "$etcd_pid" 2>/dev/null || true
    wait "$api_pid" "$proxy_pid" "$etcd_pid" 2>/dev/null || true
    pids=()
done

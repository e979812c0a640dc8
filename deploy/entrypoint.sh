#!/bin/sh
# Entry point of the wanserve image (deploy/Dockerfile).
#   entrypoint.sh serve [--no-workers] ...   the API (and in-process workers unless --no-workers)
#   entrypoint.sh worker [--gpus 0] ...      workers only (one per GPU)
#   entrypoint.sh healthcheck                exit 0 when this container's role is healthy (Docker HEALTHCHECK)
#   entrypoint.sh models|doctor|download|generate|bench ...   any other wanserve command
#   entrypoint.sh <program> ...              anything else runs as given (a shell, say)
# The role (serve or worker) is remembered in $WANSERVE_STATE_DIR/role for the health check.
set -eu

state_dir="${WANSERVE_STATE_DIR:-/tmp/wanserve}"

healthcheck() {
  role=$(cat "$state_dir/role" 2>/dev/null || echo serve)
  if [ "$role" = worker ]; then
    # A worker serves no HTTP: healthy while one of this host's workers heartbeats in the job database.
    exec python3 - <<'PY'
import socket, sys
from wanserve.bootstrap import build_database, build_registry
from wanserve.config import Settings

settings = Settings()
registry = build_registry(settings, build_database(settings))
alive = [w for w in registry.list() if w.host == socket.gethostname() and w.state in ("starting", "idle", "busy")]
print(f"{len(alive)} live worker(s) on {socket.gethostname()}")
sys.exit(0 if alive else 1)
PY
  fi
  port="${WANSERVE_PORT:-${SERVER_PORT:-8000}}"
  exec python3 - "$port" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health/live", timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"not live: {exc}")
    sys.exit(1)
PY
}

command="${1:-serve}"
[ "$#" -gt 0 ] && shift
case "$command" in
  healthcheck)
    healthcheck
    ;;
  serve|worker)
    mkdir -p "$state_dir"
    echo "$command" > "$state_dir/role"
    if [ -n "${WANSERVE_MODELS_DIR:-}" ] && [ ! -d "$WANSERVE_MODELS_DIR" ]; then
      echo "wanserve: the model directory $WANSERVE_MODELS_DIR does not exist (mount it as a volume)" >&2
      exit 2
    fi
    exec wanserve "$command" "$@"
    ;;
  models|doctor|download|generate|bench|keys)
    exec wanserve "$command" "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac

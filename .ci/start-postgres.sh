# Sourced by .ci/run (and usable by hand): starts a throwaway PostgreSQL cluster on a local port and exports
# WANSERVE_TEST_POSTGRES_URL. Needs Debian's postgresql package.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -n "$pg_bin" ]; then
  pg_dir=$(mktemp -d /tmp/wanserve-pg.XXXXXX)
  chown postgres "$pg_dir" 2>/dev/null || true
  pg_port=${WANSERVE_TEST_PG_PORT:-55432}
  as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
  as_pg "$pg_bin/initdb -D $pg_dir/data -U postgres -A trust >/dev/null"
  as_pg "$pg_bin/pg_ctl -D $pg_dir/data -o '-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1' -l $pg_dir/log -w start >/dev/null"
  export WANSERVE_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$pg_port/postgres"
  echo "PostgreSQL running at $WANSERVE_TEST_POSTGRES_URL"
else
  echo "PostgreSQL not installed; PostgreSQL tests will be skipped"
fi

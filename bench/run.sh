#!/usr/bin/env bash
# The benchmark of the running lab: wrk on client1 through the balancers' VIP (and from lb1
# straight to app1 for the proxy's cost), the app tier in gevent and then in sync workers.
# Results: docs/benchmarks/ (README.md tables, PNG plots, runs/LABEL.json).
#
#   ./stack bench [LABEL]      the documented command (toolchain setup, then this script)
#   bench/run.sh [LABEL]       the same without the setup; LABEL names the run (default
#                              baseline: the lab as the inventory configures it)
#   BENCH_VARS='{"nginx_upstream_keepalive": 512}' ./stack bench tuned
#                              a tuning trial: these extra vars go to site.yml for the run,
#                              and README.md's Tuning section compares it with the baseline
#   BENCH_PHASES=gevent ./stack bench
#                              only these phases (default: gevent sync)
#   BENCH_ONLY=idle,hello,hello-direct ./stack bench trial
#                              only these cases (default: every case of vars/cases.yml)
#
# Needs the lab up (`./stack up`). 10-15 minutes on a busy 2-core machine. What it
# changes on the lab for the run, and puts back at the end even on failure or Ctrl-C
# (`ansible-playbook site.yml --tags app,lb --limit app,lb`: the inventory's settings; every
# site.yml run of the bench is limited to the machines of the tiers it changes):
#   - nginx's per-address rate limit is off: all the load comes from one address;
#   - for the sync phase the app tier runs gunicorn `sync` workers instead of gevent.
# Every app switch keeps the release that is live (-e app_rollback_to=LIVE): settings change,
# no code is built or deployed.
set -euo pipefail
cd "$(dirname "$0")/.."

LABEL=${1:-baseline}
BENCH_VARS=${BENCH_VARS:-}
BENCH_PHASES=${BENCH_PHASES:-gevent sync}
BENCH_ONLY=${BENCH_ONLY:-}
VENV=.cache/venv-bench  # under .cache/: ignored by git and by every linter
PYTHON=${PYTHON:-$(command -v python3 || true)}
export PATH="$PWD/.venv/bin:$PATH"

die() { echo "bench: $*" >&2; exit 1; }
say() { printf '\n=== bench: %s\n' "$*"; }

[[ $LABEL =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "LABEL '$LABEL': lower-case letters, digits and -"
command -v ansible-playbook >/dev/null || die "no ansible-playbook: run ./stack setup first"

# The bench's virtualenv (matplotlib for the plots), rebuilt only when requirements change.
want=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha" 2>/dev/null)" != "$want" ]; then
  say "virtualenv $VENV from bench/requirements.txt"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "cannot make $VENV (on Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt \
    || die "pip install into $VENV failed"
  echo "$want" > "$VENV/.requirements.sha"
fi

RUN=.cache/bench/$LABEL-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
BEGIN=$(date +%s)

# Each step is timed into $RUN/steps.tsv (name, seconds, status) for the report.
step() {
  local name=$1; shift
  say "$name"; echo "$*"
  local start; start=$(date +%s)
  if "$@"; then
    printf '%s\t%s\tok\n' "$name" "$(( $(date +%s) - start ))" >> "$RUN/steps.tsv"
  else
    printf '%s\t%s\tFAILED\n' "$name" "$(( $(date +%s) - start ))" >> "$RUN/steps.tsv"
    return 1
  fi
}

"$VENV/bin/python" bench/report.py machine --out "$RUN/machine-start.json"
ansible 'client:lb:app' -m ansible.builtin.ping >/dev/null \
  || die "the client, balancers or app machines do not answer: is the lab up (./stack up)?"

# The app's live release (app role: /opt/<app_name>/current). Every switch of the bench keeps
# it (app_rollback_to): only the settings change, no code is built or deployed, whatever the
# working tree's app/ holds now.
live=$(ansible 'app[0]' -m ansible.builtin.command -a "readlink -f ${BENCH_APP_CURRENT:-/opt/webstack-app/current}" \
  2>/dev/null | sed -n 's#^/.*/releases/\([^/]*\)$#\1#p')
[ -n "$live" ] || die "cannot read the live release of the app on the first app machine"
keep=(-e "app_rollback_to=$live")
# JSON, so that false is a boolean (key=value extra vars are strings, and "false" is true).
extra=("${keep[@]}" -e '{"nginx_rate_limit": false}')
[ -z "$BENCH_VARS" ] || extra+=(-e "$BENCH_VARS")
if [ -n "$BENCH_VARS" ]; then echo "$BENCH_VARS"; else echo '{}'; fi > "$RUN/vars.json"
echo "$BENCH_PHASES" > "$RUN/phases.txt"
echo "$BENCH_ONLY" > "$RUN/only.txt"
only=$(printf '%s' "$BENCH_ONLY" | python3 -c 'import json, sys; print(json.dumps({"bench_only": [n for n in sys.stdin.read().split(",") if n]}))')
for phase in $BENCH_PHASES; do
  [[ $phase =~ ^(gevent|sync)$ ]] || die "BENCH_PHASES: '$phase' is not gevent or sync"
done

# Puts the lab back as the inventory configures it. Armed before the first change.
restored=no
restore() {
  [ "$restored" = no ] || return 0
  restored=yes
  step "restore: the inventory's settings (gevent workers, rate limit on)" \
    ansible-playbook site.yml --tags app,lb --limit app,lb "${keep[@]}" \
    || die "the lab was NOT restored: run ansible-playbook site.yml --tags app,lb --limit app,lb ${keep[*]}"
}
trap restore EXIT
trap 'exit 130' INT TERM

step "switch: gevent workers, rate limit off${BENCH_VARS:+, $BENCH_VARS}" \
  ansible-playbook site.yml --tags lb,app --limit lb,app "${extra[@]}" -e app_worker_class=gevent
step "prepare: wrk on the load machines, sessions" ansible-playbook bench/prepare.yml
for phase in $BENCH_PHASES; do
  if [ "$phase" = sync ]; then
    step "switch: sync workers" \
      ansible-playbook site.yml --tags app --limit app "${extra[@]}" -e app_worker_class=sync
  fi
  step "measure: $phase phase" \
    ansible-playbook bench/measure.yml -e "bench_phase=$phase" -e "bench_run_dir=$PWD/$RUN" \
    -e "bench_since=$(date +%s)" -e "$only"
done
restore
trap - EXIT

"$VENV/bin/python" bench/report.py machine --out "$RUN/machine-end.json"
printf 'total\t%s\tok\n' "$(( $(date +%s) - BEGIN ))" >> "$RUN/steps.tsv"
say "report"
"$VENV/bin/python" bench/report.py build --run "$RUN" --label "$LABEL" --docs docs/benchmarks

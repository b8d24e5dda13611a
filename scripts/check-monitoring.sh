#!/usr/bin/env bash
# Checks the monitoring role's Prometheus files on this machine, with no machine and no service:
# renders prometheus.yml, the alert rules and alertmanager.yml from roles/monitoring for the
# sample inventory molecule/monitoring/render/inventory/hosts.yml (with render/render.yml),
# then, with Debian's promtool (scripts/promtool.sh): `check rules` on the rules, `check config`
# on prometheus.yml (which loads the rules again), and `test rules` on the rules' unit tests
# (roles/monitoring/files/tests/alerts_test.yml). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ansible-playbook ] && export PATH="$PWD/.venv/bin:$PATH"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

ANSIBLE_DISPLAY_OK_HOSTS=false ansible-playbook \
  -i molecule/monitoring/render/inventory/hosts.yml molecule/monitoring/render/render.yml \
  -e "monitoring_render_dir=$out"
cp roles/monitoring/files/tests/alerts_test.yml "$out/"

scripts/promtool.sh check rules "$out/webstack.rules.yml"
scripts/promtool.sh check config "$out/prometheus.yml"
scripts/promtool.sh test rules "$out/alerts_test.yml"

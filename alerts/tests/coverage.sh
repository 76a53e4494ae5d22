#!/usr/bin/env bash
# Every alert in alerts/*.yml has a promtool test where it fires and one
# where it stays silent (alerts/tests/*.test.yml), and a section headed by
# its name in docs/runbooks.md (pint checks that its runbook_url links
# there). `make test-rules` runs it from the repository root.
set -euo pipefail
tested=$(awk '
  /^ *alertname:/ { a = $2 }
  /^ *exp_alerts: *\[\] *$/ { silent[a] = 1 }
  /^ *exp_alerts: *$/ { fires[a] = 1 }
  END { for (a in fires) if (a in silent) print a }' alerts/tests/*.test.yml)
status=0
for a in $(sed -n 's/^ *- alert: *//p' alerts/*.yml | sort -u); do
  if ! grep -qx "$a" <<<"$tested"; then
    echo "$a: alerts/tests/ lacks a test where it fires or one where it stays silent"
    status=1
  fi
  if ! grep -qx "## $a" docs/runbooks.md; then
    echo "$a: docs/runbooks.md lacks its section (## $a)"
    status=1
  fi
done
exit $status

// pint's configuration for llorch's rules: `make lint` runs
// `pint --offline --config tools/pint/pint.hcl lint --fail-on=warning alerts/`
// from the repository root. Offline, pint checks the rules themselves (a
// template reading a label the query drops, a rate without humanize, ...)
// plus the conventions below; the rules' behaviour is unit-tested by
// `make test-rules`.

parser {
  // alerts/tests/ holds promtool unit tests, not rule files.
  exclude = ["(.*/)?alerts/tests/.*"]
}

// Alerts: a Llorch name, a `for`, a severity, and the annotations an
// on-call engineer reads, with a runbook link whose anchor is the alert's
// own section of docs/runbooks.md (GitHub lowercases heading anchors).
rule {
  locked = true

  match {
    kind = "alerting"
  }

  name "Llorch[A-Z][A-Za-z0-9]+" {
    comment  = "Alert names start with Llorch and are CamelCase."
    severity = "bug"
  }

  for {
    comment  = "Every alert needs a `for`, so a single bad sample does not fire it."
    severity = "bug"
    min      = "30s"
  }

  label "severity" {
    comment  = "Every alert needs a severity: critical, warning or info."
    severity = "bug"
    values   = ["critical", "warning", "info"]
    required = true
  }

  annotation "summary" {
    comment  = "Every alert needs a short summary."
    severity = "bug"
    required = true
  }

  annotation "description" {
    comment  = "Every alert needs a description templated with the labels that identify what fires."
    severity = "bug"
    required = true
  }

  annotation "runbook_url" {
    comment  = "runbook_url must link the alert's own section of docs/runbooks.md."
    severity = "bug"
    value    = "(?i)https://github\\.com/llorch/llorch/blob/main/docs/runbooks\\.md#{{ $alert }}"
    required = true
  }
}

// Recording rules are named level:metric:operations
// (https://prometheus.io/docs/practices/rules/), e.g. llorch:tasks:rate5m or
// node_id:llorch_pool_slots:sum.
rule {
  locked = true

  match {
    kind = "recording"
  }

  name "[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*" {
    comment  = "Recording rules are named level:metric:operations, in lower case."
    severity = "bug"
  }
}

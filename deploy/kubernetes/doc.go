// Package kubernetes holds llorch's Kubernetes manifests (a kustomize base
// in this directory, components under components/) and what keeps them
// honest: Generate writes the manifests built from the rest of the
// repository — the PrometheusRules from alerts/*.yml and the Grafana
// dashboards' ConfigMaps from dashboards/*.json — and the package's tests
// render the base with kustomize, decode every object strictly into the
// Kubernetes and Prometheus Operator API types, and check that the objects
// refer to each other and to the daemons' flags correctly.
//
// `make kubernetes` (go run ./deploy/kubernetes/generate) rewrites the
// generated files; `go test ./deploy/kubernetes` fails while the committed
// ones differ from what Generate builds.
package kubernetes

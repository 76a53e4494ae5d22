// Package api holds llorch's wire contract (SPEC.md §3-§5): the JSON bodies the
// control plane and the node agents exchange, the error envelope, bounded
// request decoding and the HTTP middleware every llorch server shares
// (correlation IDs, bearer-token auth).
//
// Types here carry no behaviour beyond validation, so both daemons and the CLI
// can import them without pulling in either daemon.
package api

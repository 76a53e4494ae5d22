// Package api holds llorch's wire contract (SPEC.md §3-§5): the JSON bodies the
// control plane and the node agents exchange, the error envelope and its
// codes, device masks (DeviceIndices), bounded request decoding and the HTTP middleware every llorch server shares
// (correlation IDs, bearer-token auth).
//
// Types here carry no behaviour beyond validation and parsing, so both
// daemons and the CLI can import them without pulling in either daemon (nor
// the node agent's GPU libraries).
package api

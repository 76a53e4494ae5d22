// Package version holds the build's version, set at link time:
// go build -ldflags "-X github.com/llorch/llorch/version.Version=v0.1.0".
package version

// Version is the llorch release; "dev" for untagged builds.
var Version = "dev"

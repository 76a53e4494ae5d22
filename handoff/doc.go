// Package handoff reads engine handoff files (SPEC §4): the JSON file an
// engine's launcher writes into the runtime directory once the engine is
// ready. Parse validates one file; Watcher follows a directory with fsnotify
// (polling where fsnotify is unavailable) and feeds a Sink.
package handoff

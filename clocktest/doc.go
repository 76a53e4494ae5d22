// Package clocktest holds a settable clock and a way to wait for a
// condition, for tests.
//
// Clock is the fake clock code under test reads through an injected
// clock (registry.Clock) or an injected now func (its Now method value).
// It never moves by itself: a test moves it with Advance or Set, so time
// logic is checked without sleeping. It is safe for concurrent use.
//
// WaitFor is the one wait-until helper: it polls a condition for
// something that happens in another goroutine (a process started, a file
// written, a request queued) and fails the test, naming what it waited
// for, if the condition does not hold in time. Use it only for what
// happens on its own time; to prove that something does not happen, run
// the step that would have done it and check, rather than sleeping.
//
// For code that waits on its own timers (time.Sleep, time.After,
// tickers), testing/synctest's fake clock may fit better than either.
package clocktest

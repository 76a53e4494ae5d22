package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ControlPlane is the control plane under test: one the harness started
// (Process), one it was pointed at (External), or one a test runs in its
// own process.
type ControlPlane interface {
	// Start starts it where the harness owns it, and returns its base URL
	// once it answers /health.
	Start(ctx context.Context) (string, error)
	// Restart stops it — SIGKILL when kill, else SIGTERM and its graceful
	// drain — and starts it again down later, on the same address. It
	// returns once the new one answers /health.
	Restart(ctx context.Context, kill bool, down time.Duration) error
	// CanRestart reports whether Restart works.
	CanRestart() bool
	// Usage is the process's CPU time and resident memory; false when the
	// harness cannot see the process.
	Usage() (Usage, bool)
	// PprofURL is the base URL of its /debug/pprof/, "" when it has none:
	// with one, the harness forces a GC before reading the heap.
	PprofURL() string
	// Stop stops a control plane the harness started.
	Stop() error
}

// Usage is a process's resource use at one moment.
type Usage struct {
	PID        int
	CPUSeconds float64 // user + system since the process started
	RSSBytes   uint64
}

// External is a control plane the harness did not start: only its URL.
type External struct{ URL string }

var _ ControlPlane = External{}

// Start implements ControlPlane: it waits for /health.
func (e External) Start(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(e.URL, "/")
	return u, waitHealthy(ctx, u, 10*time.Second, nil)
}

// Restart implements ControlPlane: it cannot.
func (External) Restart(context.Context, bool, time.Duration) error {
	return errors.New("the harness did not start this control plane: it cannot restart it")
}

// CanRestart implements ControlPlane.
func (External) CanRestart() bool { return false }

// Usage implements ControlPlane: unknown.
func (External) Usage() (Usage, bool) { return Usage{}, false }

// PprofURL implements ControlPlane: none.
func (External) PprofURL() string { return "" }

// Stop implements ControlPlane: it leaves the control plane running.
func (External) Stop() error { return nil }

// Process is an orchestratord the harness starts as a child process, in
// the cloud profile on a free loopback port, with its pprof on another (so
// the harness can force a GC before reading the heap). Args come after
// the harness's own flags and win over them (--addr, --pprof-addr, any
// other).
type Process struct {
	Binary string   // orchestratord's path
	Args   []string // extra flags
	Token  string   // passed as LLORCH_API_TOKEN, not on the command line
	Log    io.Writer

	mu    sync.Mutex
	addr  string
	pprof string
	cmd   *exec.Cmd
	done  chan struct{}
}

var _ ControlPlane = (*Process)(nil)

// FindOrchestratord returns the orchestratord beside the running
// executable, else the one on PATH.
func FindOrchestratord() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "orchestratord")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("orchestratord")
	if err != nil {
		return "", errors.New("no orchestratord beside llorch nor on PATH: build it (make build) or point --url at a running control plane")
	}
	return p, nil
}

// FlagValue returns the value of --name in args (as "--name v",
// "--name=v", or with one dash), the last one given.
func FlagValue(args []string, name string) (string, bool) {
	val, found := "", false
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		switch {
		case a == name && i+1 < len(args):
			val, found = args[i+1], true
		case strings.HasPrefix(a, name+"="):
			val, found = strings.TrimPrefix(a, name+"="), true
		}
	}
	return val, found
}

// Start picks the ports (unless Args set them), starts the process and
// waits for /health.
func (p *Process) Start(ctx context.Context) (string, error) {
	p.mu.Lock()
	if a, ok := FlagValue(p.Args, "addr"); ok {
		p.addr = a
	} else if p.addr == "" {
		port, err := freePort()
		if err != nil {
			p.mu.Unlock()
			return "", err
		}
		p.addr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if a, ok := FlagValue(p.Args, "pprof-addr"); ok {
		p.pprof = a
	} else if p.pprof == "" {
		port, err := freePort()
		if err != nil {
			p.mu.Unlock()
			return "", err
		}
		p.pprof = fmt.Sprintf("127.0.0.1:%d", port)
	}
	p.mu.Unlock()
	if err := p.spawn(); err != nil {
		return "", err
	}
	u := "http://" + p.addr
	return u, waitHealthy(ctx, u, 30*time.Second, p.done)
}

func (p *Process) spawn() error {
	args := []string{"--cloud-profile", "--addr", p.addr, "--pprof-addr", p.pprof}
	args = append(args, p.Args...)
	cmd := exec.Command(p.Binary, args...)
	cmd.Env = os.Environ()
	if p.Token != "" {
		cmd.Env = append(cmd.Env, "LLORCH_API_TOKEN="+p.Token)
	}
	out := p.Log
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Binary, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// CanRestart implements ControlPlane.
func (p *Process) CanRestart() bool { return true }

// Restart implements ControlPlane. A graceful stop that has not ended
// within two minutes is finished with SIGKILL.
func (p *Process) Restart(ctx context.Context, kill bool, down time.Duration) error {
	if err := p.stop(kill, 2*time.Minute); err != nil {
		return err
	}
	if down > 0 {
		select {
		case <-time.After(down):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := p.spawn(); err != nil {
		return err
	}
	return waitHealthy(ctx, "http://"+p.addr, 30*time.Second, p.done)
}

func (p *Process) stop(kill bool, wait time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(wait):
	}
	_ = cmd.Process.Kill()
	<-done
	return fmt.Errorf("orchestratord did not exit within %v of %v: killed", wait, sig)
}

// Usage implements ControlPlane from /proc/PID/stat and statm.
func (p *Process) Usage() (Usage, bool) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return Usage{}, false
	}
	return ProcUsage(cmd.Process.Pid)
}

// PprofURL implements ControlPlane.
func (p *Process) PprofURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pprof == "" {
		return ""
	}
	return "http://" + p.pprof + "/debug/pprof/"
}

// Stop implements ControlPlane: SIGTERM, SIGKILL after a minute.
func (p *Process) Stop() error { return p.stop(false, time.Minute) }

// waitHealthy polls base/health until it answers 200, d passes, ctx ends
// or exited (when not nil) closes.
func waitHealthy(ctx context.Context, base string, d time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(d)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(base + "/health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/health did not answer 200 within %v (last error: %w)", base, d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("the control plane exited before answering %s/health", base)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

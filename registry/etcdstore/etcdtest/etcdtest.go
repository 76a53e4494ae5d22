// Package etcdtest runs a real, single-member etcd server inside a test
// process (go.etcd.io/etcd/server/v3/embed) on 127.0.0.1, for the tests
// of --registry etcd. Only tests import it, which keeps etcd's server out
// of the daemons' binaries.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one embedded etcd. Stop and Start simulate an outage: the
// data directory and the ports survive it.
type Server struct {
	t                  testing.TB
	dir                string
	clientURL, peerURL url.URL
	etcd               *embed.Etcd
}

// Start starts an etcd for t, stopped at its cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir()}
	s.clientURL = url.URL{Scheme: "http", Host: freeAddr(t)}
	s.peerURL = url.URL{Scheme: "http", Host: freeAddr(t)}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the client endpoint, http://127.0.0.1:port.
func (s *Server) URL() string { return s.clientURL.String() }

// Start (re)starts the server on its data directory and ports.
func (s *Server) Start() {
	s.t.Helper()
	if s.etcd != nil {
		return
	}
	cfg := embed.NewConfig()
	cfg.Name = "llorch-test"
	cfg.Dir = s.dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop()) // its shutdown errors are noise
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{s.clientURL}, []url.URL{s.clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{s.peerURL}, []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true // a test's data needs no durability; fsync would dominate on CI disks
	var err error
	for attempt := 0; ; attempt++ { // a port just closed may linger a moment
		if s.etcd, err = embed.StartEtcd(cfg); err == nil || attempt == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-s.etcd.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		s.etcd.Close()
		s.t.Fatal("etcd not ready within 30s")
	}
}

// Stop stops the server (an outage until Start).
func (s *Server) Stop() {
	if s.etcd == nil {
		return
	}
	s.etcd.Close()
	s.etcd = nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}

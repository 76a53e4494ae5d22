package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/llorch/llorch/registry/etcdstore"
)

// The registry backends of --registry.
const (
	RegistryMemory = "memory" // this process alone
	RegistryEtcd   = "etcd"   // shared by every replica on the same etcd prefix
)

// EtcdConfig is how a replica reaches etcd (--etcd-*).
type EtcdConfig struct {
	Endpoints          []string
	Prefix             string
	Username, Password string
	CAFile             string // enables TLS
	CertFile, KeyFile  string // client certificate
}

func (cfg *Config) validateRegistry() error {
	switch cfg.Registry {
	case RegistryMemory:
		return nil
	case RegistryEtcd:
	default:
		return fmt.Errorf("--registry/ORCHD_REGISTRY %q: want memory or etcd", cfg.Registry)
	}
	if !cfg.CloudProfile {
		return errors.New("--registry etcd shares the node registry of the cloud profile: add --cloud-profile")
	}
	e := cfg.Etcd
	if len(e.Endpoints) == 0 {
		return errors.New("--registry etcd needs --etcd-endpoints/ORCHD_ETCD_ENDPOINTS, e.g. http://127.0.0.1:2379")
	}
	for _, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--etcd-endpoints/ORCHD_ETCD_ENDPOINTS %q: want http(s)://host:port URLs, comma-separated", ep)
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return errors.New("--etcd-cert-file and --etcd-key-file go together")
	}
	if (e.Username == "") != (e.Password == "") {
		return errors.New("--etcd-username and --etcd-password (ORCHD_ETCD_PASSWORD) go together")
	}
	if e.Prefix == "" || e.Prefix[0] != '/' {
		return fmt.Errorf("--etcd-prefix/ORCHD_ETCD_PREFIX %q: want a key prefix starting with /", e.Prefix)
	}
	return nil
}

// shareRegistry connects the registry to etcd (--registry etcd): the
// Store writes what this replica receives and follows what the others
// write; etcd's leases, not a sweep, mark nodes offline.
func (d *Daemon) shareRegistry() error {
	e := d.cfg.Etcd
	tlsConfig, err := etcdTLS(e)
	if err != nil {
		return err
	}
	// The client does not dial at New: an etcd down at start is retried,
	// as one that goes down later is.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: e.Endpoints, DialTimeout: 2 * time.Second, TLS: tlsConfig,
		Username: e.Username, Password: e.Password, Logger: zap.NewNop(),
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("etcd client for %v: %w", e.Endpoints, err)
	}
	host, _ := os.Hostname()
	d.shared = etcdstore.New(etcdstore.Options{Client: cli, Registry: d.reg, Prefix: e.Prefix, Logger: d.log,
		Replica: host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)})
	d.prom.MustRegister(d.shared)
	d.goBackground(func(ctx context.Context) {
		d.shared.Run(ctx)
		_ = cli.Close()
	})
	d.log.Info("cloud profile: node registry shared through etcd", "endpoints", e.Endpoints, "prefix", e.Prefix,
		"node_timeout", d.cfg.NodeTimeout, "offline_by", "etcd lease expiry")
	return nil
}

func etcdTLS(e EtcdConfig) (*tls.Config, error) {
	if e.CAFile == "" && e.CertFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pem, err := os.ReadFile(e.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca-file %s: no PEM certificate in it", e.CAFile)
		}
	}
	if e.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert-file/--etcd-key-file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// sharedCondition is what /health says of the shared registry; nil in
// memory mode.
func (d *Daemon) sharedCondition() func() (backend, condition string) {
	if d.shared == nil {
		return nil
	}
	return func() (string, string) { return RegistryEtcd, d.shared.Condition() }
}

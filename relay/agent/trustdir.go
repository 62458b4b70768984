package agent

import (
	"context"
	"crypto/x509"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// trustDirPoll is how often the agent reads its trust bundle folder. The
// kubelet updates a projected volume by swapping the ..data link, which a
// read sees whole; polling also needs no inotify in the container.
const trustDirPoll = 2 * time.Second

// trustDir holds the roots of the mounted trust bundle folder
// (config.Agent.TrustBundleDir), read when the agent is made (load) and
// then every trustDirPoll (run). A folder that cannot be read, or holds a file that is not
// PEM certificates, keeps the roots read before it.
type trustDir struct {
	dir   string
	clock clock.Clock
	log   logr.Logger
	// changed is called when the folder's roots change.
	changed func(ctx context.Context)

	mu    sync.Mutex
	certs []*x509.Certificate
	fp    string
	err   error
	read  bool
}

func newTrustDir(dir string, c clock.Clock, log logr.Logger) *trustDir {
	return &trustDir{dir: dir, clock: c, log: log.WithName("trust-bundle").WithValues("folder", dir)}
}

// roots returns the folder's roots as read last.
func (d *trustDir) roots() []*x509.Certificate {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.certs
}

// load reads the folder and reports whether its roots changed.
func (d *trustDir) load() bool {
	certs, fp, err := trustbundle.Read(d.dir)
	d.mu.Lock()
	defer d.mu.Unlock()
	first := !d.read
	d.read = true
	if err != nil {
		if d.err == nil || d.err.Error() != err.Error() {
			d.log.Error(err, "failed to read the trust bundle folder; keeping the roots read before", "roots", len(d.certs))
		}
		d.err = err
		return false
	}
	if d.err != nil {
		d.log.Info("trust bundle folder readable again")
		d.err = nil
	}
	if fp == d.fp && !first {
		return false
	}
	d.certs, d.fp = certs, fp
	d.log.Info("read trust bundle folder", "roots", len(certs), "fingerprint", fp)
	return true
}

// run polls the folder until ctx ends, calling changed after a change.
func (d *trustDir) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.clock.After(trustDirPoll):
		}
		if d.load() && d.changed != nil {
			d.changed(ctx)
		}
	}
}

package webhook

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// secrets checks relay secrets through the catalogue. It reads the other
// relay secrets of the namespace through reader: the root a chain must also
// verify to, and the certificates an update of a CA must not orphan.
//
// reader is a cache, which can lag a write it has just admitted: a new root
// applied a moment before the signing secret issued under it. So a request
// denied with what reader holds is checked again with live, which reads
// from the API server (nil: no second look, as offline).
type secrets struct {
	cfg    *config.Webhook
	reader client.Reader
	live   client.Reader
	now    func() time.Time
	// roots keeps the root secret's ca.crt parsed (nil: parsed on
	// every read).
	roots *rootCache
}

// confirmed returns p, a verdict found through the cache, or, when p
// denies and a live reader is set, again's verdict found with the secrets
// read from the API server: a denial stands only on what is stored, never
// on a cache that has not yet seen the write before this one.
func (s *secrets) confirmed(p *problems, err error, again func(*secrets) (*problems, error)) (*problems, error) {
	if err != nil || len(p.errs) == 0 || s.live == nil {
		return p, err
	}
	fresh := *s
	fresh.reader, fresh.live = s.live, nil
	return again(&fresh)
}

func (s *secrets) names() relaysecret.Names { return relaysecret.WebhookNames(s.cfg) }

// kindOf returns the kind of the secret named key, or false when it is not
// a relay secret.
func (s *secrets) kindOf(key types.NamespacedName) (relaysecret.Kind, bool) {
	return s.names().KindOf(key)
}

// get returns the secret named key, or nil when it does not exist.
func (s *secrets) get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	var sec corev1.Secret
	if err := s.reader.Get(ctx, key, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to read secret %s: %w", key, err)
	}
	return &sec, nil
}

// validate checks sec; old is the stored secret on update, nil on create.
// An error is a failure to read what the checks need, not a denial.
func (s *secrets) validate(ctx context.Context, sec, old *corev1.Secret) (*problems, error) {
	p, err := s.validateOnce(ctx, sec, old)
	return s.confirmed(p, err, func(fresh *secrets) (*problems, error) { return fresh.validateOnce(ctx, sec, old) })
}

// validateOnce is validate with the secrets reader holds.
func (s *secrets) validateOnce(ctx context.Context, sec, old *corev1.Secret) (*problems, error) {
	p := &problems{}
	kind, ok := s.kindOf(client.ObjectKeyFromObject(sec))
	if !ok {
		return p, nil
	}
	check := relaysecret.Context{
		Authority:  s.cfg.Authority,
		Cluster:    s.cfg.Cluster,
		RootsFrom:  s.cfg.RootTLSSecret.Name,
		GraceRatio: s.cfg.ClientTLSSecretRotationGracePeriodRatio,
		Now:        s.now(),
	}
	switch kind {
	case relaysecret.Signing, relaysecret.Server, relaysecret.Client:
		roots, err := s.otherRoots(ctx)
		if err != nil {
			return nil, err
		}
		check.Roots = roots
	}
	if kind == relaysecret.Client && s.cfg.Cluster == "" {
		s.warnNoCluster(p, sec)
	}
	m, r := relaysecret.Validate(kind, sec.Data, s.cfg.TokenSecret.Key, check)
	p.errs = append(p.errs, r.Errs...)
	p.warnings = append(p.warnings, r.Warnings...)
	if err := s.warnCAKey(ctx, p, kind, sec, m); err != nil {
		return nil, err
	}
	if len(p.errs) == 0 && old != nil {
		if err := s.checkChainsKept(ctx, p, kind, sec, old, check.Now); err != nil {
			return nil, err
		}
		if s.guardsRoots(sec) {
			if err := s.checkRootsKept(ctx, p, old, sec.Data[relaysecret.KeyCACert], sec.Annotations, false); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// validateDelete checks the delete of old: on the management cluster, the
// root guard's check. Every other delete is allowed. An error is a failure
// to read what the check needs, not a denial.
func (s *secrets) validateDelete(ctx context.Context, old *corev1.Secret) (*problems, error) {
	p, err := s.validateDeleteOnce(ctx, old)
	return s.confirmed(p, err, func(fresh *secrets) (*problems, error) { return fresh.validateDeleteOnce(ctx, old) })
}

// validateDeleteOnce is validateDelete with what reader holds.
func (s *secrets) validateDeleteOnce(ctx context.Context, old *corev1.Secret) (*problems, error) {
	p := &problems{}
	if !s.guardsRoots(old) {
		return p, nil
	}
	if err := s.checkRootsKept(ctx, p, old, nil, old.Annotations, true); err != nil {
		return nil, err
	}
	return p, nil
}

// warnNoCluster says that a client certificate's cluster name was not
// compared, because this webhook does not know its cluster.
func (s *secrets) warnNoCluster(p *problems, sec *corev1.Secret) {
	if certs, err := pki.DecodeCertificates(sec.Data[relaysecret.KeyTLSCert]); err == nil {
		cluster, _ := pki.ClientIdentity(certs[0])
		p.warn("%s: this webhook has no --cluster, so the client certificate's cluster name %q was not compared with this cluster's", sec.Name, cluster)
	}
}

// otherRoots returns relay-root-tls-secret's ca.crt, which a secret must
// also chain to, or nil when that secret does not exist or its ca.crt does
// not decode (the root secret's own check reports that).
func (s *secrets) otherRoots(ctx context.Context) ([]*x509.Certificate, error) {
	root, err := s.get(ctx, s.names().Root)
	if err != nil || root == nil {
		return nil, err
	}
	certs, err := s.roots.decode(root.Data[relaysecret.KeyCACert])
	if err != nil {
		return nil, nil
	}
	return certs, nil
}

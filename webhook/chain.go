package webhook

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// checkChainsKept denies an update of the root or the signing secret after
// which a certificate stored in the namespace that verified before no
// longer does. The usual safe path is to add the new root beside the old
// one in ca.crt, re-issue, then remove the old root.
func (s *secrets) checkChainsKept(ctx context.Context, p *problems, role relaysecret.Kind, sec, old *corev1.Secret, now time.Time) error {
	if role != relaysecret.Root && role != relaysecret.Signing {
		return nil
	}
	before, after, err := s.trustChange(ctx, role, sec, old)
	if err != nil || before == nil {
		return err
	}
	var broken []string
	for _, dep := range s.dependents(role) {
		depSec, err := s.get(ctx, dep.key(s))
		if err != nil {
			return err
		}
		if depSec == nil {
			continue
		}
		certs, err := pki.DecodeCertificates(depSec.Data[relaysecret.KeyTLSCert])
		if err != nil {
			continue
		}
		if before.verifies(certs, dep.role, now) && !after.verifies(certs, dep.role, now) {
			broken = append(broken, fmt.Sprintf("%s (%q)", depSec.Name, certs[0].Subject.CommonName))
		}
	}
	if len(broken) == 0 {
		return nil
	}
	if sec.Annotations[meshv1alpha1.AllowChainBreakAnnotation] == "true" {
		p.warn("%s: admitted by %s=true, and %s no longer verify: re-issue them", sec.Name, meshv1alpha1.AllowChainBreakAnnotation, strings.Join(broken, ", "))
		return nil
	}
	what := "the new ca.crt"
	fix := "keep the old root in ca.crt beside the new one until they are re-issued"
	if role == relaysecret.Signing {
		what = "the new signing certificate"
		fix = "re-issue them (each with its full chain in tls.crt) before replacing it"
	}
	p.deny(field.NewPath("data"), "this update leaves %s without a valid chain: they do not verify through %s; %s, or annotate the secret %s=true to replace it anyway",
		strings.Join(broken, ", "), what, fix, meshv1alpha1.AllowChainBreakAnnotation)
	return nil
}

// trust is what a stored certificate is verified with: extra intermediates
// beside its own chain, and roots.
type trust struct {
	intermediates []*x509.Certificate
	roots         []*x509.Certificate
}

func (t *trust) verifies(certs []*x509.Certificate, role pki.Role, now time.Time) bool {
	inter := append(append([]*x509.Certificate{}, certs[1:]...), t.intermediates...)
	_, err := pki.VerifyChain(certs[0], inter, t.roots, role, now)
	return err == nil
}

// trustChange returns the trust before and after the update of a root or
// signing secret; nil before when the old secret verified nothing.
func (s *secrets) trustChange(ctx context.Context, role relaysecret.Kind, sec, old *corev1.Secret) (before, after *trust, err error) {
	if role == relaysecret.Root {
		oldRoots, err := pki.DecodeCertificates(old.Data[relaysecret.KeyCACert])
		if err != nil {
			return nil, nil, nil
		}
		newRoots, _ := pki.DecodeCertificates(sec.Data[relaysecret.KeyCACert])
		return &trust{roots: oldRoots}, &trust{roots: newRoots}, nil
	}
	oldChain, err := pki.DecodeCertificates(old.Data[relaysecret.KeyTLSCert])
	if err != nil {
		return nil, nil, nil
	}
	newChain, _ := pki.DecodeCertificates(sec.Data[relaysecret.KeyTLSCert])
	oldRoots, _ := pki.DecodeCertificates(old.Data[relaysecret.KeyCACert])
	newRoots, _ := pki.DecodeCertificates(sec.Data[relaysecret.KeyCACert])
	if shared, err := s.otherRoots(ctx); err != nil {
		return nil, nil, err
	} else if shared != nil {
		oldRoots, newRoots = shared, shared
	}
	return &trust{intermediates: oldChain, roots: oldRoots}, &trust{intermediates: newChain, roots: newRoots}, nil
}

// dependent is a stored secret whose certificate a CA update may orphan.
type dependent struct {
	role pki.Role
	key  func(*secrets) types.NamespacedName
}

func (s *secrets) dependents(role relaysecret.Kind) []dependent {
	deps := []dependent{
		{pki.RoleServer, func(s *secrets) types.NamespacedName { return s.cfg.TLSSecret.NamespacedName(s.cfg.Namespace) }},
		{pki.RoleClient, func(s *secrets) types.NamespacedName { return s.cfg.ClientTLSSecret.NamespacedName(s.cfg.Namespace) }},
	}
	if role == relaysecret.Root {
		deps = append(deps, dependent{pki.RoleSigningCA, func(s *secrets) types.NamespacedName { return s.cfg.SigningTLSSecret.NamespacedName(s.cfg.Namespace) }})
	}
	return deps
}

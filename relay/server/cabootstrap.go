package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// EnsureCA creates what a management install needs and is absent: the root
// CA, the intermediate signing CA, the server certificate and the identity
// token, each in its secret, as the settings allow, with the configured
// lifetimes. A root secret that is missing while the signing or server
// secret exists is not made again: a new root would be trusted by no
// agent; it is logged, and the rotation reports it. It only ever creates:
// a secret that exists is used as it is, never overwritten, so any number
// of replicas may run it at once; the one whose create wins defines the
// material and the others read it back. c must read from the API server,
// not from a cache, so that a secret another replica just created is seen.
func EnsureCA(ctx context.Context, c client.Client, cfg *config.Server, log logr.Logger) error {
	if !cfg.DisableTokenGeneration {
		if err := ensureToken(ctx, c, cfg, log); err != nil {
			return err
		}
	}
	if cfg.DisableCa || cfg.DisableCaCertGeneration {
		return nil
	}
	now := time.Now()
	signingRef, serverRef := cfg.SigningTLSSecret.NamespacedName(cfg.Namespace), cfg.TLSSecret.NamespacedName(cfg.Namespace)
	if orphans, err := withoutRoot(ctx, c, cfg, signingRef, serverRef); err != nil || len(orphans) > 0 {
		if err != nil {
			return err
		}
		// A new root here would be one that no agent trusts and that the
		// remaining secrets do not chain to: make nothing, and say so.
		// The rotation and readiness keep saying it.
		log.Error(fmt.Errorf("secret %s is missing while %v remain", cfg.RootTLSSecret.NamespacedName(cfg.Namespace), orphans),
			"not generating a new root CA: restore the root secret from a backup (relayctl restore), or delete the remaining generated secrets to start over with a new root, after which every cluster must be registered again")
		return nil
	}
	rootTTL := cfg.RootCertificateTTL.Duration
	root, err := ensureCASecret(ctx, c, relaysecret.Root, cfg.RootTLSSecret.NamespacedName(cfg.Namespace), log, func() (*pki.Certified, error) {
		return pki.NewRootCA(pki.Options{CommonName: relaysecret.RootCommonName, Organization: []string{relaysecret.Organization}, TTL: rootTTL, Now: now, Backdate: generatedBackdate(rootTTL)})
	})
	if err != nil {
		return err
	}
	// needRootKey says why a secret signed by the root cannot be made.
	needRootKey := func(what string, target types.NamespacedName) error {
		if root.Key != nil {
			return nil
		}
		return fmt.Errorf("secret %s has no tls.key to sign %s with: provide %s, or add the root key", cfg.RootTLSSecret.NamespacedName(cfg.Namespace), what, target)
	}
	signingTTL := cfg.SigningCertificateTTL.Duration
	_, err = ensureCASecret(ctx, c, relaysecret.Signing, signingRef, log, func() (*pki.Certified, error) {
		if err := needRootKey("an intermediate", signingRef); err != nil {
			return nil, err
		}
		return root.NewIntermediateCA(pki.Options{CommonName: relaysecret.SigningCommonName, Organization: []string{relaysecret.Organization}, TTL: signingTTL, Now: now, Backdate: generatedBackdate(signingTTL)})
	})
	if err != nil {
		return err
	}
	_, err = ensureCASecret(ctx, c, relaysecret.Server, serverRef, log, func() (*pki.Certified, error) {
		if err := needRootKey("the server certificate", serverRef); err != nil {
			return nil, err
		}
		return root.IssueServer(serverOptions(cfg, cfg.ServerCertificateTTL.Duration, now))
	})
	return err
}

// withoutRoot returns the signing and server secrets that exist while the
// root secret does not: what a new root would leave without a chain.
func withoutRoot(ctx context.Context, c client.Client, cfg *config.Server, others ...types.NamespacedName) ([]string, error) {
	rootKey := cfg.RootTLSSecret.NamespacedName(cfg.Namespace)
	if err := c.Get(ctx, rootKey, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		if err != nil {
			return nil, fmt.Errorf("failed to get secret %s: %w", rootKey, err)
		}
		return nil, nil
	}
	var found []string
	for _, k := range others {
		err := c.Get(ctx, k, &corev1.Secret{})
		switch {
		case err == nil:
			found = append(found, k.String())
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("failed to get secret %s: %w", k, err)
		}
	}
	return found, nil
}

func uniq(names ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// ensureCASecret returns the certificate stored in the secret key, creating
// the secret from make when it is absent. The stored key may be missing
// (a root without tls.key); the certificate must decode.
func ensureCASecret(ctx context.Context, c client.Client, kind relaysecret.Kind, key types.NamespacedName, log logr.Logger, make func() (*pki.Certified, error)) (*pki.Certified, error) {
	s, created, err := createOnce(ctx, c, c, key, func() (*corev1.Secret, error) {
		made, err := make()
		if err != nil {
			return nil, err
		}
		keyPEM, err := made.KeyPEM()
		if err != nil {
			return nil, err
		}
		return &corev1.Secret{
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{relaysecret.KeyTLSCert: made.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: made.CAPEM()},
		}, nil
	})
	if err != nil {
		return nil, err
	}
	ca, err := certifiedFromSecret(kind, s)
	if err == nil && created {
		log.Info("created secret", "secret", key.String(), "notAfter", ca.Cert.NotAfter)
	}
	return ca, err
}

// createOnce returns the secret key as stored, creating it from make (its
// name and the generated label are set here) when it is absent. It never
// changes a stored secret, so any number of replicas may race: a create
// that loses reads the winner's secret from api, which must not be a cache.
// created says whether this call made the secret.
func createOnce(ctx context.Context, c client.Client, api client.Reader, key types.NamespacedName, make func() (*corev1.Secret, error)) (s *corev1.Secret, created bool, err error) {
	s = &corev1.Secret{}
	err = c.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		made, merr := make()
		if merr != nil {
			return nil, false, merr
		}
		made.Namespace, made.Name = key.Namespace, key.Name
		if made.Labels == nil {
			made.Labels = map[string]string{}
		}
		made.Labels[meshv1alpha1.GeneratedLabel] = "true"
		err = c.Create(ctx, made)
		if err == nil {
			return made, true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, false, fmt.Errorf("failed to create secret %s: %w", key, err)
		}
		err = api.Get(ctx, key, s)
	}
	if err != nil {
		return nil, false, fmt.Errorf("failed to get secret %s: %w", key, err)
	}
	return s, false, nil
}

// certifiedFromSecret decodes the secret s of kind k through the catalogue
// and returns its certificate with its key and issuers. A root secret may
// hold no tls.key, and then perhaps only ca.crt.
func certifiedFromSecret(k relaysecret.Kind, s *corev1.Secret) (*pki.Certified, error) {
	m, errs := relaysecret.Decode(k, s.Data, "")
	if len(errs) > 0 {
		return nil, fmt.Errorf("secret %s/%s: %s", s.Namespace, s.Name, relaysecret.Message(errs))
	}
	return m.Certified(), nil
}

// tokenBytes is the entropy of a generated identity token.
const tokenBytes = 32

func ensureToken(ctx context.Context, c client.Client, cfg *config.Server, log logr.Logger) error {
	key := cfg.TokenSecret.NamespacedName(cfg.Namespace)
	s, created, err := createOnce(ctx, c, c, key, func() (*corev1.Secret, error) {
		raw := make([]byte, tokenBytes)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("failed to generate identity token: %w", err)
		}
		return &corev1.Secret{
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{cfg.TokenSecret.Key: []byte(base64.RawURLEncoding.EncodeToString(raw))},
		}, nil
	})
	switch {
	case err != nil:
		return err
	case created:
		log.Info("created identity token secret", "secret", key.String())
	case len(s.Data[cfg.TokenSecret.Key]) == 0:
		return fmt.Errorf("secret %s has no %q key: add the identity token under it, or delete the secret so the server generates one", key, cfg.TokenSecret.Key)
	}
	return nil
}

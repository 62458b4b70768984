package agent

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// newSecretStore names the agent's secrets from its settings; Run's manager
// gives it its clients.
func newSecretStore(cfg *config.Agent) *secretStore {
	return &secretStore{
		client: cfg.ClientTLSSecret.NamespacedName(cfg.Namespace),
		root:   cfg.RootTLSSecret.NamespacedName(cfg.Namespace),
		token:  cfg.TokenSecret.NamespacedName(cfg.Namespace),
		tokKey: cfg.TokenSecret.Key,
	}
}

// writeClient stores a new client certificate, key and root in the client
// secret, creating it or updating only its data. tokenHash, when not empty,
// records the bootstrap token the certificate was obtained with.
func (s *secretStore) writeClient(ctx context.Context, certPEM, keyPEM, caPEM []byte, tokenHash string) error {
	data := map[string][]byte{relaysecret.KeyTLSCert: certPEM, relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: caPEM}
	var cur corev1.Secret
	err := s.writer.Get(ctx, s.client, &cur)
	if apierrors.IsNotFound(err) {
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.client.Namespace, Name: s.client.Name},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		recordToken(&sec.ObjectMeta, tokenHash)
		if err := s.writer.Create(ctx, sec); err != nil {
			return fmt.Errorf("failed to create secret %s: %w", s.client, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to get secret %s: %w", s.client, err)
	}
	cur.Data = data
	recordToken(&cur.ObjectMeta, tokenHash)
	if err := s.writer.Update(ctx, &cur); err != nil {
		return fmt.Errorf("failed to update secret %s: %w", s.client, err)
	}
	return nil
}

// recordToken sets the annotation naming the bootstrap token a certificate
// came from, when tokenHash is not empty.
func recordToken(meta *metav1.ObjectMeta, tokenHash string) {
	if tokenHash == "" {
		return
	}
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[v1alpha1.BootstrapTokenUsedAnnotation] = tokenHash
}

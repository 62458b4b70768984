package agent

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
// secret, creating it or updating only its data.
func (s *secretStore) writeClient(ctx context.Context, certPEM, keyPEM, caPEM []byte) error {
	data := map[string][]byte{relaysecret.KeyTLSCert: certPEM, relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: caPEM}
	var cur corev1.Secret
	err := s.writer.Get(ctx, s.client, &cur)
	if apierrors.IsNotFound(err) {
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.client.Namespace, Name: s.client.Name},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		if err := s.writer.Create(ctx, sec); err != nil {
			return fmt.Errorf("failed to create secret %s: %w", s.client, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to get secret %s: %w", s.client, err)
	}
	cur.Data = data
	if err := s.writer.Update(ctx, &cur); err != nil {
		return fmt.Errorf("failed to update secret %s: %w", s.client, err)
	}
	return nil
}

package certgen

import (
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// WriteStream writes every secret of sets to w as one multi-document YAML
// stream, each Secret preceded by a comment naming the cluster to apply it
// to: "# cluster: management" or "# cluster: <workload cluster>".
func WriteStream(w io.Writer, sets []ClusterSecrets) error {
	first := true
	for _, set := range sets {
		for i := range set.Secrets {
			doc, err := marshalSecret(&set.Secrets[i])
			if err != nil {
				return err
			}
			sep := "---\n"
			if first {
				sep, first = "", false
			}
			if _, err := fmt.Fprintf(w, "%s# cluster: %s\n%s", sep, set.Cluster, doc); err != nil {
				return fmt.Errorf("failed to write secrets: %w", err)
			}
		}
	}
	return nil
}

func marshalSecret(s *corev1.Secret) ([]byte, error) {
	doc, err := yaml.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("failed to encode secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return doc, nil
}

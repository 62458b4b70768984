package app

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/certgen"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// newGenCommand returns "relayctl gen", which generates a certificate
// architecture of the reference as Secrets to apply.
func newGenCommand(g *globalFlags) *cobra.Command {
	var (
		arch, format, out string
		clusters          []string
		force             bool
		opts              = certgen.Options{Namespace: config.DefaultNamespace, Authority: config.DefaultAuthority}
	)
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Generate a certificate architecture as Kubernetes Secrets for the management and workload clusters",
		Long: `gen makes the roots, intermediates, server certificate and client certificates of one of the
reference's certificate architectures and writes them as Secrets ready to apply. In every
architecture the relay server and its agents share one root and one intermediate, which signs the
server certificate (DNS names *.<namespace> and the authority) and each workload cluster's client
certificate (its one DNS name is the cluster's name). The architectures differ in what Istio's CA
shares with the relay:

  single             one root and one intermediate, which is also Istio's CA in every workload
                     cluster (simplest: each workload cluster holds the key that signs relay
                     client certificates)
  two-intermediates  one root with two intermediates: one signs the relay's certificates and
                     stays in the management cluster, the other is Istio's CA
  separate-roots     the relay and Istio each have their own root and intermediate, so relay
                     traffic and mesh traffic share no root of trust

relay-server admits client certificates only from its signing CA, and agents admit a server
certificate only from the CA that issued their own (issuer pinning). Where Istio's CA key is on
workload clusters under the relay root, gen says on stderr what it allows: in single it is the
relay signing CA itself, whose certificates pinning cannot refuse; in two-intermediates it is
another CA under the relay root, whose relay certificates pinning refuses except while an agent
bootstraps with its token.

Secrets, by cluster:
  management   <namespace>/relay-root-tls-secret (the root with its key), relay-tls-signing-secret,
               relay-server-tls-secret
  each cluster <namespace>/relay-root-tls-secret (ca.crt only), relay-client-tls-secret (tls.crt is
               the certificate and the intermediate, ca.crt the root), istio-system/cacerts

Without --out, the Secrets go to stdout as one YAML stream, each preceded by a "# cluster:" comment
naming the cluster to apply it to. With --out DIR, each cluster gets a folder, DIR/management and
DIR/<cluster>, with a kustomization.yaml: apply one with "kubectl apply -k DIR/<cluster>". An
existing file is never overwritten unless --force is given.

The output holds private keys: keep it out of version control, or encrypt it.

` + exitCodesHelp,
		Example: `  relayctl gen --architecture two-intermediates --clusters cluster-1,cluster-2 --out certs
  kubectl --context mgmt apply -k certs/management
  kubectl --context cluster-1 apply -k certs/cluster-1

  relayctl gen --architecture single --clusters cluster-1 | less`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := certgen.ParseArchitecture(arch)
			if err != nil {
				return err
			}
			f, err := certgen.ParseFormat(format)
			if err != nil {
				return err
			}
			if f == certgen.FormatKustomize && out == "" {
				return errors.New("--format kustomize writes files: add --out DIR")
			}
			opts.Architecture = a
			opts.Namespace = g.namespace
			opts.Clusters = trimClusterNames(clusters)
			sets, err := certgen.Generate(opts)
			if err != nil {
				return err
			}
			warnings, err := certgen.Warnings(sets, time.Now())
			if err != nil {
				return err
			}
			for _, w := range warnings {
				if _, err := fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: %s\n", w); err != nil {
					return err
				}
			}
			if out == "" {
				return certgen.WriteStream(cmd.OutOrStdout(), sets)
			}
			if err := certgen.WriteDir(out, sets, f, force); err != nil {
				return err
			}
			return printGenFolders(cmd, out, sets)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&arch, "architecture", "", "certificate architecture: single, two-intermediates or separate-roots")
	fs.StringSliceVar(&clusters, "clusters", nil, "workload cluster names, comma-separated; each must be a DNS-1123 label")
	fs.StringVar(&out, "out", "", "folder to write DIR/management and DIR/<cluster> into; empty writes a YAML stream to stdout")
	fs.StringVar(&format, "format", string(certgen.FormatSecrets), "with --out: secrets (Secret YAML files) or kustomize (PEM files and a secretGenerator)")
	fs.BoolVar(&force, "force", false, "with --out: overwrite files that already exist")
	fs.StringVar(&opts.Authority, "authority", opts.Authority, "name agents dial (SNI); the server certificate covers it")
	return cmd
}

func trimClusterNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimSpace(n)
	}
	return out
}

// printGenFolders tells where each cluster's folder is and how to apply it.
func printGenFolders(cmd *cobra.Command, out string, sets []certgen.ClusterSecrets) error {
	w := cmd.OutOrStdout()
	for _, set := range sets {
		dir := filepath.Join(out, set.Cluster)
		if _, err := fmt.Fprintf(w, "%s: %d secrets in %s: kubectl apply -k %s\n", set.Cluster, len(set.Secrets), dir, dir); err != nil {
			return err
		}
	}
	return nil
}

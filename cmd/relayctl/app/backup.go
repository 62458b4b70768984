package app

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/backup"
	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
)

// backupFlags are the flags backup and restore share; --context (the
// management cluster), -n and --kubeconfig are relayctl's own.
type backupFlags struct {
	g                 *globalFlags
	context           string
	namespace, output string
	force             bool
}

func (f *backupFlags) bind(cmd *cobra.Command, forceUsage string) {
	fs := cmd.Flags()
	fs.BoolVar(&f.force, "force", false, forceUsage)
	outputFlag(cmd, &f.output)
}

// mustRequire marks flag as required; it panics when cmd has no such flag.
func mustRequire(cmd *cobra.Command, flag string) {
	if err := cmd.MarkFlagRequired(flag); err != nil {
		panic(err)
	}
}

// connect refuses an unknown -o, then connects to --context.
func (f *backupFlags) connect() (*clusterClients, error) {
	if err := checkOutputFormat(f.output); err != nil {
		return nil, err
	}
	f.namespace, f.context = f.g.namespace, f.g.contextName(f.g.context)
	return connect(f.g, f.g.context)
}

func newBackupCommand(g *globalFlags) *cobra.Command {
	var (
		f   = backupFlags{g: g}
		out string
	)
	cmd := &cobra.Command{
		Use:   "backup [--context CONTEXT] --out DIR",
		Short: "Save the relay secrets of the management cluster as Secret manifests in a folder",
		Long: `backup saves the relay secrets that relay-server generated, so that losing them does not
mean giving every workload cluster new certificates: relay-root-tls-secret,
relay-tls-signing-secret, relay-server-tls-secret, relay-identity-token-secret and
relay-client-tls-secret, and root-trust.<policy>, the root relay-server generated for each
RootTrustPolicy that asks for one (mgmtServerCa.generated), from --namespace of the cluster
of --context.

Each secret that exists is written to DIR/<name>.yaml as a clean Secret manifest: name,
namespace, labels, annotations (without kubectl's last-applied-configuration), type and
data, with none of the fields the API server sets. A secret that does not exist is reported
and skipped; it is an error when none exists. DIR is created with mode 0700 and every file
with mode 0600. A file that already exists is never overwritten unless --force is given.

The files hold private keys and the identity token, unencrypted: keep them out of version
control and store them encrypted. relayctl restore writes them back.

` + exitCodesHelp,
		Example: `  relayctl backup --context mgmt --out relay-backup
  relayctl backup --context mgmt --namespace gloo-mesh --out relay-backup --force -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			results, err := backup.Backup(cmd.Context(), c, backup.BackupOptions{Namespace: f.namespace, Dir: out, Force: f.force})
			if err != nil {
				return err
			}
			reminder := backupReminder(results, f.namespace, f.context, out)
			if f.output != "" {
				// Machines read stdout; the reminder is for the person.
				if _, err := io.WriteString(cmd.ErrOrStderr(), reminder); err != nil {
					return err
				}
				reminder = ""
			}
			return printResult(cmd.OutOrStdout(), f.output, kindBackup, nonNil(results), func() string {
				return resultTable(results) + reminder
			})
		},
	}
	f.bind(cmd, "overwrite files that already exist in DIR")
	cmd.Flags().StringVar(&out, "out", "", "folder to save the secrets in, created with mode 0700 (required)")
	mustRequire(cmd, "out")
	return cmd
}

// backupReminder says what was saved, that it is secret, and how to
// restore it.
func backupReminder(results []backup.Result, namespace, kubeContext, dir string) string {
	n := 0
	for _, r := range results {
		if r.Action == backup.ActionSaved {
			n++
		}
	}
	return fmt.Sprintf(`Saved %d %s of namespace %s (context %s) in %s.
These files hold private keys and the identity token, unencrypted: keep them out of version
control, store them encrypted, and delete the copies you do not need.
Restore them with: relayctl restore --context %s --namespace %s --from %s
`, n, plural(n, "secret", "secrets"), namespace, kubeContext, dir, kubeContext, namespace, dir)
}

func newRestoreCommand(g *globalFlags) *cobra.Command {
	var (
		f      = backupFlags{g: g}
		from   string
		dryRun dryRunFlag
	)
	cmd := &cobra.Command{
		Use:   "restore [--context CONTEXT] --from DIR",
		Short: "Write the relay secrets saved by relayctl backup back into the management cluster",
		Long: `restore reads DIR/*.yaml, the files relayctl backup saved, and writes the secrets back into
--namespace of the cluster of --context. It checks everything before it writes anything:

  - every file must hold one v1 Secret named relay-root-tls-secret, relay-tls-signing-secret,
    relay-server-tls-secret, relay-identity-token-secret, relay-client-tls-secret or
    root-trust.<policy>, in --namespace or in none, and no two files the same secret;
    otherwise the command fails, naming each bad file, and nothing is written;
  - a secret that does not exist is created; one that holds the same data is unchanged; one
    whose data differs is refused, naming the keys that differ (never their values), unless
    --force, which replaces its data;
  - the API server (and its admission webhooks) must accept every write in a dry run.

When a secret is refused, nothing is written: the relay secrets form one chain, and half of
an old chain beside half of a new one serves no agent. The exit status is then 1.
--dry-run=client and --dry-run=server both do every check, the API server's dry run
included, and report what would happen, writing nothing.

` + exitCodesHelp,
		Example: `  relayctl restore --context mgmt --from relay-backup --dry-run=server
  relayctl restore --context mgmt --from relay-backup
  relayctl restore --context mgmt --from relay-backup --force -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			dryRun.warn(cmd.ErrOrStderr())
			dry := dryRun.mode != fleet.DryRunNone
			results, err := backup.Restore(cmd.Context(), c, backup.RestoreOptions{
				Namespace: f.namespace, Dir: from, Force: f.force, DryRun: dry,
			})
			if err != nil {
				if len(results) > 0 {
					_ = printResult(cmd.OutOrStdout(), f.output, kindRestore, results, func() string { return resultTable(results) })
				}
				return err
			}
			refused := backup.Refused(results)
			if err := printResult(cmd.OutOrStdout(), f.output, kindRestore, nonNil(results), func() string {
				return resultTable(results) + restoreSummary(results, refused, dry, f.namespace, f.context)
			}); err != nil {
				return err
			}
			if refused > 0 {
				return problemsFound(fmt.Errorf("%d %s refused: nothing was written",
					refused, plural(refused, "secret", "secrets")))
			}
			return nil
		},
	}
	f.bind(cmd, "replace the data of secrets that differ from their files")
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "folder relayctl backup saved to (required)")
	bindDryRun(cmd, &dryRun, "what would happen")
	mustRequire(cmd, "from")
	return cmd
}

// restoreSummary is the last line of restore's text output; a refusal
// has none, as the error says it.
func restoreSummary(results []backup.Result, refused int, dryRun bool, namespace, kubeContext string) string {
	if refused > 0 {
		return ""
	}
	counts := map[string]int{}
	var order []string
	for _, r := range results {
		if counts[r.Action] == 0 {
			order = append(order, r.Action)
		}
		counts[r.Action]++
	}
	parts := make([]string, len(order))
	for i, a := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[a], a)
	}
	what := "Restored"
	if dryRun {
		what = "Dry run, nothing was written"
	}
	return fmt.Sprintf("%s: namespace %s (context %s): %s.\n", what, namespace, kubeContext, strings.Join(parts, ", "))
}

// resultTable lists results under a header: action, secret, detail.
func resultTable(results []backup.Result) string {
	rows := make([][]string, len(results))
	for i, r := range results {
		rows[i] = []string{r.Action, r.Secret, r.Detail}
	}
	return table([]string{"ACTION", "SECRET", "DETAIL"}, rows)
}

// nonNil makes an empty list print as [] rather than null.
func nonNil(results []backup.Result) []backup.Result {
	if results == nil {
		return []backup.Result{}
	}
	return results
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

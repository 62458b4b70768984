package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/manifest"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/webhook"
)

// webhookFlags are relay-webhook's flags that change what its checks
// accept; validate takes them under the same names.
// Its --namespace is relayctl's -n/--namespace.
var webhookFlags = []string{
	"authority",
	"root-tls-secret", "root-tls-secret-namespace", "signing-tls-secret", "signing-tls-secret-namespace",
	"tls-secret", "tls-secret-namespace", "client-tls-secret", "client-tls-secret-namespace",
	"token-secret", "token-secret-key", "token-secret-namespace",
	"client-tls-secret-rotation-grace-period-ratio", "istio-namespace", "istio-ca-secret",
}

// Results of one object.
const (
	resultOK      = "ok"
	resultDenied  = "denied"
	resultWarning = "warning"
	resultSkipped = "skipped"
)

type validateOptions struct {
	files  []string
	output string
	cfg    config.Webhook
	clock  clock.PassiveClock
}

func newValidateCommand(g *globalFlags) *cobra.Command {
	o := &validateOptions{cfg: config.DefaultWebhook(), clock: clock.RealClock{}}
	cmd := &cobra.Command{
		Use:   "validate -f PATH|- [--cluster-name NAME] [-o json|yaml] [flags]",
		Short: "Check manifests offline with the admission webhook's checks",
		Long: `validate runs relay-webhook's checks on manifests without a cluster: relay secrets
(the root, signing, server and client certificate secrets, the identity token),
Istio's cacerts, cert-manager Certificates that write relay secrets, and
KubernetesClusters. Other objects are skipped.

-f takes files, folders (walked for .yaml, .yml and .json files, leaving out
hidden folders and kustomization files) or - for stdin, and may be repeated.
Documents are YAML separated by "---" or JSON, each an object or a List.
All secrets of the input are checked together: where the webhook reads
another secret of the cluster (relay-root-tls-secret, which a client chain
must also verify to), validate reads it from the input. Every object is
checked as a create. Manifests that name no namespace are taken to be in
-n/--namespace (relay-webhook's --namespace).

Without --cluster-name a client certificate's cluster name is not compared,
as on a relay-webhook without --cluster, and a warning says so.

The text output is a table of the objects checked, with each denial and warning
below its object, then the input errors and a summary; -o json|yaml prints a
ValidationReport of every object.

Exit status: 0 when every object is admitted, 1 when an object is denied or an
input is broken (a file that cannot be read, a document that does not decode, an
object defined twice), 2 when validate could not run (bad flags).`,
		Example: `  # the secrets of an overlay, for workload cluster cluster-1
  kubectl kustomize overlays/cluster-1 | relayctl validate -f - --cluster-name cluster-1

  # every manifest under a folder, as a JSON report
  relayctl validate -f deploy/ -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.cfg.Namespace = g.namespace
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVarP(&o.files, "filename", "f", nil, "file, folder or - for stdin holding the manifests to check; repeat for more")
	outputFlag(cmd, &o.output)
	fs.StringVar(&o.cfg.Cluster, "cluster-name", o.cfg.Cluster, "the workload cluster's registered name: a client certificate's DNS name must equal it (relay-webhook's --cluster)")
	bindWebhookFlags(fs, &o.cfg)
	mustRequire(cmd, "filename")
	return cmd
}

// bindWebhookFlags adds webhookFlags to fs, bound to cfg, with
// relay-webhook's own names, defaults and help.
func bindWebhookFlags(fs *pflag.FlagSet, cfg *config.Webhook) {
	all := pflag.NewFlagSet("relay-webhook", pflag.ContinueOnError)
	config.BindWebhook(all, cfg)
	for _, name := range webhookFlags {
		fs.AddFlag(all.Lookup(name))
	}
}

func (o *validateOptions) run(ctx context.Context, stdin io.Reader, out io.Writer) error {
	if err := checkOutputFormat(o.output); err != nil {
		return err
	}
	if err := o.cfg.Validate(); err != nil {
		return usageError(fmt.Errorf("invalid webhook settings: %w", err))
	}
	scheme, err := scheme.Scheme()
	if err != nil {
		return err
	}
	dec, err := manifest.NewDecoder(scheme, manifest.WebhookKinds...)
	if err != nil {
		return err
	}
	in := o.read(dec, stdin)
	reader := manifest.NewReader(scheme)
	o.load(in, reader)
	rep := o.check(ctx, in, webhook.NewValidator(&o.cfg, reader, o.clock))
	if err := printResult(out, o.output, kindValidation, rep, rep.text); err != nil {
		return err
	}
	return rep.exitError()
}

// read decodes every -f, in order.
func (o *validateOptions) read(dec *manifest.Decoder, stdin io.Reader) *manifest.Result {
	in := &manifest.Result{}
	seen := map[string]bool{}
	for _, path := range o.files {
		if path == "-" {
			if seen[path] {
				in.Errors = append(in.Errors, &manifest.Error{Source: manifest.Source{File: "stdin"}, Err: errors.New("-f - is given more than once: stdin is read once")})
				continue
			}
			seen[path] = true
			in.Add(dec.Decode("stdin", stdin))
			continue
		}
		files, err := manifest.Files(path)
		if err != nil {
			in.Errors = append(in.Errors, err)
			continue
		}
		for _, f := range files {
			if key := filepath.Clean(f); !seen[key] {
				seen[key] = true
				in.Add(dec.DecodeFile(f))
			}
		}
	}
	return in
}

// load puts the namespace on the decoded objects that name none and adds
// them to reader, so that the checks find each other's secrets. An object
// defined twice is an input error: which one a lookup should find is not
// known.
func (o *validateOptions) load(in *manifest.Result, reader *manifest.Reader) {
	first := map[string]manifest.Source{}
	for i := range in.Objects {
		obj := &in.Objects[i]
		if obj.Decoded == nil {
			continue
		}
		if obj.Decoded.GetNamespace() == "" {
			obj.Decoded.SetNamespace(o.cfg.Namespace)
			obj.Namespace = o.cfg.Namespace
		}
		id := obj.Kind + " " + obj.Namespace + "/" + obj.Name
		err := reader.Add(obj.Decoded)
		switch {
		case apierrors.IsAlreadyExists(err):
			in.Errors = append(in.Errors, &manifest.Error{Source: obj.Source, Err: fmt.Errorf(
				"%s is also defined at %s: check one rendered set at a time, for example kubectl kustomize overlays/cluster-1 | relayctl validate -f -", id, first[id])})
		case err != nil:
			in.Errors = append(in.Errors, &manifest.Error{Source: obj.Source, Err: err})
		default:
			first[id] = obj.Source
		}
	}
}

// check runs the webhook's check of every object.
func (o *validateOptions) check(ctx context.Context, in *manifest.Result, v *webhook.Validator) *validateReport {
	rep := &validateReport{Objects: []objectResult{}}
	for _, obj := range in.Objects {
		res := objectResult{Source: obj.Source, APIVersion: obj.APIVersion, Kind: obj.Kind, Namespace: obj.Namespace, Name: obj.Name}
		var err error
		switch d := obj.Decoded.(type) {
		case nil:
			res.Result, res.Reason, res.otherKind = resultSkipped, "the webhook does not check this kind", true
		default:
			if !v.Checks(d) {
				res.Result, res.Reason = resultSkipped, o.uncheckedReason(d)
				break
			}
			res.Denials, res.Warnings, err = v.Object(ctx, d)
			switch {
			case err != nil:
				rep.Errors = append(rep.Errors, inputError{Source: obj.Source, Error: err.Error()})
				continue
			case len(res.Denials) > 0:
				res.Result = resultDenied
			case len(res.Warnings) > 0:
				res.Result = resultWarning
			default:
				res.Result = resultOK
			}
		}
		rep.Objects = append(rep.Objects, res)
	}
	for _, err := range in.Errors {
		ie := inputError{Error: err.Error()}
		if me, ok := errors.AsType[*manifest.Error](err); ok {
			ie = inputError{Source: me.Source, Error: me.Err.Error()}
		}
		rep.Errors = append(rep.Errors, ie)
	}
	rep.summarize()
	return rep
}

// uncheckedReason says why the webhook would admit obj without a look.
func (o *validateOptions) uncheckedReason(obj client.Object) string {
	if crt, ok := obj.(*cmapi.Certificate); ok {
		return fmt.Sprintf("spec.secretName %q is not a relay certificate secret of namespace %s (--namespace): the webhook admits it unchecked", crt.Spec.SecretName, o.cfg.Namespace)
	}
	return fmt.Sprintf("not a relay secret of namespace %s (--namespace) nor Istio's %s/%s: the webhook admits it unchecked", o.cfg.Namespace, o.cfg.IstioNamespace, o.cfg.IstioCASecret)
}

// validateReport is what -o json and -o yaml print.
type validateReport struct {
	Objects []objectResult `json:"objects"`
	Errors  []inputError   `json:"errors,omitempty"`
	Summary reportSummary  `json:"summary"`
}

type objectResult struct {
	manifest.Source
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	// Result is ok, denied, warning (admitted with warnings) or skipped.
	Result   string   `json:"result"`
	Denials  []string `json:"denials,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Reason says why an object was skipped.
	Reason string `json:"reason,omitempty"`
	// otherKind: a kind the webhook never sees, left out of the text.
	otherKind bool
}

type inputError struct {
	manifest.Source
	Error string `json:"error"`
}

type reportSummary struct {
	Checked  int `json:"checked"`
	Admitted int `json:"admitted"`
	Denied   int `json:"denied"`
	// Warned counts the checked objects with warnings, admitted or not.
	Warned  int `json:"warned"`
	Skipped int `json:"skipped"`
	Errors  int `json:"errors"`
}

func (r *validateReport) summarize() {
	s := reportSummary{Errors: len(r.Errors)}
	for _, o := range r.Objects {
		switch o.Result {
		case resultSkipped:
			s.Skipped++
			continue
		case resultDenied:
			s.Denied++
		default:
			s.Admitted++
		}
		s.Checked++
		if len(o.Warnings) > 0 {
			s.Warned++
		}
	}
	r.Summary = s
}

// text is a table of the objects the webhook checks, or would skip though
// their kind is one it checks; then, per object, its denials, warnings or
// why it was skipped; input errors; and a summary. Objects of other kinds
// are only counted.
func (r *validateReport) text() string {
	var b strings.Builder
	var rows [][]string
	var details []string
	for _, o := range r.Objects {
		if o.otherKind {
			continue
		}
		name := o.Name
		if o.Namespace != "" {
			name = o.Namespace + "/" + o.Name
		}
		rows = append(rows, []string{strings.ToUpper(o.Result), o.Kind, name, o.Source.String()})
		for _, d := range o.Denials {
			details = append(details, fmt.Sprintf("%s %s: denied: %s", o.Kind, name, d))
		}
		for _, wn := range o.Warnings {
			details = append(details, fmt.Sprintf("%s %s: warning: %s", o.Kind, name, wn))
		}
		if o.Reason != "" {
			details = append(details, fmt.Sprintf("%s %s: skipped: %s", o.Kind, name, o.Reason))
		}
	}
	if len(rows) > 0 {
		b.WriteString(table([]string{"RESULT", "KIND", "NAME", "SOURCE"}, rows))
	}
	if len(details) > 0 {
		b.WriteString("\n" + strings.Join(details, "\n") + "\n")
	}
	if len(r.Errors) > 0 {
		b.WriteString("\n")
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "ERROR %s: %s\n", e.Source, e.Error)
	}
	s := r.Summary
	fmt.Fprintf(&b, "\n%d checked: %d admitted, %d denied, %d with warnings; %d skipped; %s\n", s.Checked, s.Admitted, s.Denied, s.Warned, s.Skipped, inputErrors(s.Errors))
	return b.String()
}

// exitError is nil when nothing was denied and every input was read.
func (r *validateReport) exitError() error {
	var parts []string
	if n := r.Summary.Denied; n > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d checked objects denied", n, r.Summary.Checked))
	}
	if n := r.Summary.Errors; n > 0 {
		parts = append(parts, inputErrors(n))
	}
	if len(parts) == 0 {
		return nil
	}
	return problemsFound(errors.New(strings.Join(parts, "; ")))
}

func inputErrors(n int) string {
	return fmt.Sprintf("%d %s", n, plural(n, "input error", "input errors"))
}

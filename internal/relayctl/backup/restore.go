package backup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RestoreOptions say what Restore reads and how it writes.
type RestoreOptions struct {
	// Namespace is where the secrets go; a file that names another
	// namespace is refused.
	Namespace string
	// Names are the secrets a file may hold; empty means DefaultNames and
	// any generated RootTrustPolicy root, root-trust.<policy>.
	Names []string
	// Dir is the folder Backup saved to.
	Dir string
	// Force replaces a secret whose data differs from its file.
	Force bool
	// DryRun checks everything, the API server's admission included, and
	// writes nothing.
	DryRun bool
}

// op is what Restore will do with one secret.
type op struct {
	saved
	// cur is the secret in the cluster, nil when there is none.
	cur    *corev1.Secret
	result Result
}

// Restore writes the secrets saved in o.Dir back into the cluster. It
// checks everything before writing anything, in three steps:
//
//  1. every *.yaml file of o.Dir must hold one v1 Secret named in o.Names
//     (by default also root-trust.<policy>),
//     in o.Namespace or in none, and no two files the same secret: if one
//     does not, Restore returns an error naming each such file;
//  2. a secret that does not exist will be created; one that holds the same
//     data is unchanged; one whose data differs is refused, naming the keys
//     that differ, unless o.Force, which replaces its data (a differing
//     type, which an update cannot change, is always refused);
//  3. the API server must accept every create and update in a dry run (its
//     admission webhooks included); a write it rejects is refused.
//
// When anything is refused, nothing is written and the secrets that would
// have been are reported as skipped: the relay secrets form one chain, and
// half of an old chain beside half of a new one serves no agent. Otherwise
// Restore writes (unless o.DryRun), creating the namespace if it is gone.
// The results are in the order of o.Names; Refused counts the refusals.
func Restore(ctx context.Context, c client.Client, o RestoreOptions) ([]Result, error) {
	if o.Namespace == "" || o.Dir == "" {
		return nil, errors.New("a namespace and a folder are both required")
	}
	all, err := load(o.Dir, o.Namespace, namesOr(o.Names), len(o.Names) == 0)
	if err != nil {
		return nil, err
	}
	ops := make([]*op, len(all))
	for i, s := range all {
		if ops[i], err = plan(ctx, c, s, o.Force); err != nil {
			return nil, err
		}
	}
	nsMissing := false
	if Refused(results(ops)) == 0 {
		nsMissing = admit(ctx, c, ops, o.Namespace)
	}
	if n := Refused(results(ops)); n > 0 {
		for _, p := range ops {
			verb, ok := map[string]string{ActionCreated: "create", ActionUpdated: "update"}[p.result.Action]
			if !ok {
				continue
			}
			p.result.Action = ActionSkipped
			p.result.Detail = fmt.Sprintf("would %s it from %s, but nothing was written: %d %s refused",
				verb, p.file, n, plural(n, "secret was", "secrets were"))
		}
		return results(ops), nil
	}
	if o.DryRun {
		for _, p := range ops {
			switch p.result.Action {
			case ActionCreated:
				p.result.Action = ActionWouldCreate
			case ActionUpdated:
				p.result.Action = ActionWouldUpdate
			}
		}
		return results(ops), nil
	}
	if nsMissing {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}
		if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("failed to create namespace %s: %w", o.Namespace, err)
		}
	}
	var done []Result
	for _, p := range ops {
		if err := write(ctx, c, p, false); err != nil {
			return done, fmt.Errorf("%w; %s", err, writtenSoFar(done))
		}
		done = append(done, p.result)
	}
	return done, nil
}

// plan compares one saved secret with the cluster's.
func plan(ctx context.Context, c client.Client, s saved, force bool) (*op, error) {
	p := &op{saved: s, result: Result{Secret: s.secret.Name}}
	var cur corev1.Secret
	err := c.Get(ctx, client.ObjectKeyFromObject(s.secret), &cur)
	switch {
	case apierrors.IsNotFound(err):
		p.result.Action, p.result.Detail = ActionCreated, "from "+s.file
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("failed to read secret %s: %w", client.ObjectKeyFromObject(s.secret), err)
	}
	p.cur = &cur
	curType := cur.Type
	if curType == "" {
		curType = corev1.SecretTypeOpaque
	}
	diff := DiffData(cur.Data, s.secret.Data)
	switch {
	case curType != s.secret.Type:
		p.result.Action = ActionRefused
		p.result.Detail = fmt.Sprintf("is of type %s in the cluster and %s in %s, which an update cannot change: delete the secret, then restore again",
			curType, s.secret.Type, s.file)
	case diff.Empty():
		p.result.Action, p.result.Detail = ActionUnchanged, "the cluster holds the data of "+s.file
	case !force:
		p.result.Action = ActionRefused
		p.result.Detail = fmt.Sprintf("holds different data than %s (%s): rerun with --force to replace it", s.file, diff)
	default:
		p.result.Action = ActionUpdated
		p.result.Detail = fmt.Sprintf("from %s (%s)", s.file, diff)
	}
	return p, nil
}

// admit asks the API server to accept every planned write in a dry run
// and refuses those it rejects. It reports whether the namespace is
// missing, which only fails the dry run of creates.
func admit(ctx context.Context, c client.Client, ops []*op, namespace string) (nsMissing bool) {
	for _, p := range ops {
		if p.result.Action != ActionCreated && p.result.Action != ActionUpdated {
			continue
		}
		err := write(ctx, c, p, true)
		switch {
		case err == nil:
		case p.cur == nil && isNamespaceMissing(err):
			nsMissing = true
			p.result.Detail += fmt.Sprintf(", into namespace %s, which does not exist: restore creates it", namespace)
		default:
			p.result.Action = ActionRefused
			p.result.Detail = fmt.Sprintf("the API server rejects it: %v", apiMessage(err))
		}
	}
	return nsMissing
}

// write creates or updates the secret of p, in a dry run when dryRun.
func write(ctx context.Context, c client.Client, p *op, dryRun bool) error {
	switch p.result.Action {
	case ActionCreated:
		s := p.secret.DeepCopy()
		var opts []client.CreateOption
		if dryRun {
			opts = append(opts, client.DryRunAll)
		}
		if err := c.Create(ctx, s, opts...); err != nil {
			return fmt.Errorf("failed to create secret %s: %w", s.Name, err)
		}
	case ActionUpdated:
		s := p.cur.DeepCopy()
		s.Data = p.secret.DeepCopy().Data
		s.StringData = nil
		s.Labels = mergeMaps(s.Labels, p.secret.Labels)
		s.Annotations = mergeMaps(s.Annotations, p.secret.Annotations)
		var opts []client.UpdateOption
		if dryRun {
			opts = append(opts, client.DryRunAll)
		}
		if err := c.Update(ctx, s, opts...); err != nil {
			return fmt.Errorf("failed to update secret %s: %w", s.Name, err)
		}
	}
	return nil
}

// isNamespaceMissing reports whether err is the API server's answer to a
// create in a namespace that does not exist.
func isNamespaceMissing(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) || !apierrors.IsNotFound(err) {
		return false
	}
	d := st.Status().Details
	return d != nil && d.Kind == "namespaces"
}

// apiMessage returns the API server's message of err, without the
// "failed to create" wrapping.
func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		return st.Status().Message
	}
	return err.Error()
}

func mergeMaps(into, from map[string]string) map[string]string {
	if len(from) == 0 {
		return into
	}
	if into == nil {
		into = make(map[string]string, len(from))
	}
	maps.Copy(into, from)
	return into
}

func results(ops []*op) []Result {
	out := make([]Result, len(ops))
	for i, p := range ops {
		out[i] = p.result
	}
	return out
}

// writtenSoFar says which secrets a failed restore had already written.
func writtenSoFar(done []Result) string {
	var names []string
	for _, r := range done {
		if r.Action != ActionUnchanged {
			names = append(names, r.Secret+" ("+r.Action+")")
		}
	}
	if len(names) == 0 {
		return "nothing was written"
	}
	return "already written: " + strings.Join(names, ", ")
}

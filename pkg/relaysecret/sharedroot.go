package relaysecret

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// issued reports whether secrets of kind k hold a certificate issued under
// the relay root, with that root in ca.crt.
func (k Kind) issued() bool { return k == Signing || k == Server || k == Client }

// rootsFrom names the secret the context's roots come from.
func (c *Context) rootsFrom() string {
	if c.RootsFrom != "" {
		return c.RootsFrom
	}
	return Root.DefaultName()
}

// caFromContext lets a signing, server or client secret without ca.crt
// verify to the context's roots (relay-root-tls-secret's ca.crt) instead,
// with a warning: `kubectl create secret tls`, which a restore by hand
// uses, writes tls.crt and tls.key only. When the context has no roots the
// missing ca.crt stays an error, which names the root secret when the
// caller reads one. It returns errs without what the roots answer.
func (r *Result) caFromContext(m *Material, data map[string][]byte, errs field.ErrorList, ctx Context) field.ErrorList {
	if !m.Kind.issued() || present(data[KeyCACert]) {
		return errs
	}
	path := DataPath(KeyCACert).String()
	kept := make(field.ErrorList, 0, len(errs))
	for _, e := range errs {
		if e.Field == path && len(ctx.Roots) > 0 {
			continue
		}
		if e.Field == path && ctx.RootsFrom != "" {
			e.Detail += fmt.Sprintf(", or create %s holding it, which a secret without ca.crt is verified against", ctx.RootsFrom)
		}
		kept = append(kept, e)
	}
	if len(ctx.Roots) > 0 {
		m.Roots, m.rootsFromContext = ctx.Roots, true
		r.warn("data[%s] is missing, so tls.crt was verified against %s's ca.crt: add ca.crt, the root that signed the chain, so that the secret stands alone (kubectl create secret tls writes only tls.crt and tls.key)",
			KeyCACert, ctx.rootsFrom())
	}
	return kept
}

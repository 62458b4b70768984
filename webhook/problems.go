package webhook

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// problems collects what validate found: errors deny, warnings do not.
type problems struct {
	errs     field.ErrorList
	warnings []string
}

// deny records a problem at path, with detail saying what is wrong and how
// to fix it.
func (p *problems) deny(path *field.Path, format string, args ...any) {
	p.errs = append(p.errs, field.Invalid(path, nil, fmt.Sprintf(format, args...)))
}

func (p *problems) denyErr(path *field.Path, err error) {
	p.errs = append(p.errs, field.Invalid(path, nil, err.Error()))
}

func (p *problems) warn(format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf(format, args...))
}

// message renders the errors on one line, each as "path: detail".
func (p *problems) message(subject string) string {
	return subject + ": " + relaysecret.Message(p.errs)
}

package chart

import (
	"context"
	"fmt"
)

// Compare renders each install both ways and returns its differences,
// prefixed by the install's name, and the copies that drifted.
func Compare(ctx context.Context, helm, kubectl, root string) ([]string, error) {
	out, err := CheckCopies(root)
	if err != nil {
		return nil, err
	}
	installs, err := Installs(root)
	if err != nil {
		return nil, err
	}
	for _, in := range installs {
		k, err := Kustomize(ctx, kubectl, root, in)
		if err != nil {
			return nil, err
		}
		h, err := Template(ctx, helm, root, in.CRDs, in.Set, nil)
		if err != nil {
			return nil, err
		}
		ko, err := Decode(k)
		if err != nil {
			return nil, fmt.Errorf("%s overlay: %w", in.Name, err)
		}
		ho, err := Decode(h)
		if err != nil {
			return nil, fmt.Errorf("%s chart: %w", in.Name, err)
		}
		Normalise(ko)
		Normalise(ho)
		for _, d := range Diff(ko, ho) {
			out = append(out, in.Name+": "+d)
		}
	}
	return out, nil
}

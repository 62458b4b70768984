package main

import (
	"slices"
	"testing"
)

func TestStreamShapesFlag(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        streamShapes
		wantErr     bool
	}{
		{"both shapes in the order given", "push+pull,connect", streamShapes{pushPullShape, connectShape}, false},
		{"one shape for a quick run", "connect", streamShapes{connectShape}, false},
		{"spaces around the names are ignored", " connect , push+pull ", streamShapes{connectShape, pushPullShape}, false},
		{"an unknown shape is refused", "connect,pull", nil, true},
		{"an empty list is refused", "", nil, true},
		{"a shape named twice is refused", "connect,connect", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slices.Clone(allShapes)
			err := got.Set(tc.value)
			if tc.wantErr {
				if err == nil {
					t.Errorf("Set(%q) = %v, want an error", tc.value, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Set(%q) = %v, %v; want %v", tc.value, got, err, tc.want)
			}
		})
	}
	if got := allShapes.String(); got != "connect,push+pull" {
		t.Errorf("default --scale-shapes = %q, want connect,push+pull", got)
	}
}

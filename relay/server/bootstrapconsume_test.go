package server

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAnnotationsPatch(t *testing.T) {
	for name, tc := range map[string]struct {
		before, after map[string]string
		want          map[string]any
	}{
		"a consumed token's record is removed, other annotations are left alone": {
			before: map[string]string{"a": "1", "hash": "h", "expires": "e"},
			after:  map[string]string{"a": "1"},
			want:   map[string]any{"hash": nil, "expires": nil},
		},
		"a shared token's bootstrap adds its mark": {
			before: nil,
			after:  map[string]string{"bootstrapped": "t"},
			want:   map[string]any{"bootstrapped": "t"},
		},
		"a changed value is set": {
			before: map[string]string{"bootstrapped": "t0"},
			after:  map[string]string{"bootstrapped": "t1"},
			want:   map[string]any{"bootstrapped": "t1"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := annotationsPatch("42", tc.before, tc.after)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"metadata": map[string]any{"resourceVersion": "42", "annotations": tc.want}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("patch = %s, want %v", b, want)
			}
		})
	}
}

package backup

import (
	"slices"
	"testing"
)

func TestDiffDataNamesKeysNeverValues(t *testing.T) {
	for _, tc := range []struct {
		name            string
		cluster, backup map[string][]byte
		want            Diff
		text            string
	}{
		{"the same data differs in nothing", map[string][]byte{"a": []byte("1")}, map[string][]byte{"a": []byte("1")}, Diff{}, ""},
		{"nil and empty data are the same", nil, map[string][]byte{}, Diff{}, ""},
		{"a changed value names its key", map[string][]byte{"tls.key": []byte("x")}, map[string][]byte{"tls.key": []byte("y")},
			Diff{Changed: []string{"tls.key"}}, "tls.key differs"},
		{"keys on one side only are named by side, sorted",
			map[string][]byte{"b": nil, "a": nil, "same": []byte("s"), "c": []byte("1"), "d": []byte("1")},
			map[string][]byte{"z": nil, "same": []byte("s"), "d": []byte("2"), "c": []byte("2")},
			Diff{Changed: []string{"c", "d"}, OnlyInCluster: []string{"a", "b"}, OnlyInBackup: []string{"z"}},
			"c, d differ; a, b are only in the cluster; z is only in the backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DiffData(tc.cluster, tc.backup)
			if !slices.Equal(got.Changed, tc.want.Changed) || !slices.Equal(got.OnlyInCluster, tc.want.OnlyInCluster) || !slices.Equal(got.OnlyInBackup, tc.want.OnlyInBackup) {
				t.Errorf("DiffData = %+v, want %+v", got, tc.want)
			}
			if got.Empty() != (tc.text == "") {
				t.Errorf("Empty() = %v for %+v", got.Empty(), got)
			}
			if s := got.String(); s != tc.text {
				t.Errorf("String() = %q, want %q", s, tc.text)
			}
		})
	}
}

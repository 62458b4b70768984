package backup

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// Diff names the keys in which a secret in the cluster and its backup
// differ. It holds key names only, never values.
type Diff struct {
	// Changed keys are in both, with different values.
	Changed []string
	// OnlyInCluster keys are in the cluster's secret and not the backup.
	OnlyInCluster []string
	// OnlyInBackup keys are in the backup and not the cluster's secret.
	OnlyInBackup []string
}

// DiffData compares the data of a secret in the cluster with its backup;
// each list of the result is sorted.
func DiffData(cluster, backup map[string][]byte) Diff {
	var d Diff
	for k, v := range cluster {
		b, ok := backup[k]
		switch {
		case !ok:
			d.OnlyInCluster = append(d.OnlyInCluster, k)
		case !bytes.Equal(v, b):
			d.Changed = append(d.Changed, k)
		}
	}
	for k := range backup {
		if _, ok := cluster[k]; !ok {
			d.OnlyInBackup = append(d.OnlyInBackup, k)
		}
	}
	slices.Sort(d.Changed)
	slices.Sort(d.OnlyInCluster)
	slices.Sort(d.OnlyInBackup)
	return d
}

// Empty reports whether the data is the same.
func (d Diff) Empty() bool {
	return len(d.Changed)+len(d.OnlyInCluster)+len(d.OnlyInBackup) == 0
}

// Keys returns every key that differs, sorted.
func (d Diff) Keys() []string {
	keys := slices.Concat(d.Changed, d.OnlyInCluster, d.OnlyInBackup)
	slices.Sort(keys)
	return keys
}

// String reads as "tls.crt, tls.key differ; extra is only in the cluster;
// token is only in the backup", leaving out the parts that are empty.
func (d Diff) String() string {
	var parts []string
	if len(d.Changed) > 0 {
		parts = append(parts, fmt.Sprintf("%s %s", strings.Join(d.Changed, ", "), plural(len(d.Changed), "differs", "differ")))
	}
	if len(d.OnlyInCluster) > 0 {
		parts = append(parts, fmt.Sprintf("%s %s only in the cluster", strings.Join(d.OnlyInCluster, ", "), plural(len(d.OnlyInCluster), "is", "are")))
	}
	if len(d.OnlyInBackup) > 0 {
		parts = append(parts, fmt.Sprintf("%s %s only in the backup", strings.Join(d.OnlyInBackup, ", "), plural(len(d.OnlyInBackup), "is", "are")))
	}
	return strings.Join(parts, "; ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

package certgen

import (
	"strings"
	"testing"
)

func TestGenerateRefusesInOneLineNamingTheValueAndTheFix(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"a cluster name with an underscore is refused with the name to use", Options{Clusters: []string{"cluster_1"}}, []string{`"cluster_1"`, `use "cluster-1"`}},
		{"a cluster name with uppercase letters is refused with the name to use", Options{Clusters: []string{"a", "Cluster1"}}, []string{`"Cluster1"`, `use "cluster1"`}},
		{"a cluster name ending with a hyphen is refused with the rule", Options{Clusters: []string{"east-"}}, []string{`"east-"`, "DNS-1123 label"}},
		{"a cluster name with a dot is refused", Options{Clusters: []string{"east.prod"}}, []string{`"east.prod"`, "use lowercase letters, digits and hyphens"}},
		{"a cluster name over 63 bytes is refused with the rule", Options{Clusters: []string{strings.Repeat("a", 64)}}, []string{"more than the 63 allowed", "DNS-1123 label"}},
		{"no clusters are refused with an example", Options{}, []string{"no workload clusters", `"cluster-1"`}},
		{"an empty cluster name is refused", Options{Clusters: []string{"a", ""}}, []string{"empty", "remove the empty entry"}},
		{"a cluster listed twice is refused", Options{Clusters: []string{"a", "b", "a"}}, []string{`"a" is listed twice`, "list each workload cluster once"}},
		{"a cluster called management is refused", Options{Clusters: []string{"management"}}, []string{`"management" is reserved`, "another name"}},
		{"an unknown architecture is refused with the known ones", Options{Architecture: "triple", Clusters: []string{"a"}}, []string{`"triple"`, "use single, two-intermediates or separate-roots"}},
		{"a namespace that is not a label is refused", Options{Namespace: "gloo_mesh", Clusters: []string{"a"}}, []string{"invalid namespace", `use "gloo-mesh"`}},
		{"an authority with an underscore is refused", Options{Authority: "mgmt_server.gloo-mesh", Clusters: []string{"a"}}, []string{"invalid authority", `use "mgmt-server.gloo-mesh"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Architecture == "" {
				tc.opts.Architecture = Single
			}
			sets, err := Generate(tc.opts)
			wantErr(t, err, tc.want...)
			if sets != nil {
				t.Errorf("Generate returned secrets beside its error")
			}
		})
	}
}

func TestParseNamesTheChoicesOfAnUnknownValue(t *testing.T) {
	for _, a := range Architectures {
		if got, err := ParseArchitecture(string(a)); err != nil || got != a {
			t.Errorf("ParseArchitecture(%q) = %q, %v", a, got, err)
		}
	}
	_, err := ParseArchitecture("")
	wantErr(t, err, `unknown architecture ""`, "use single")
	_, err = ParseFormat("helm")
	wantErr(t, err, `unknown format "helm"`, "use secrets or kustomize")
}

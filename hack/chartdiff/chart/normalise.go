package chart

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Object is one decoded manifest.
type Object = map[string]any

// Decode reads a stream of YAML documents into objects, skipping empty
// documents.
func Decode(stream string) ([]Object, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var out []Object
	for {
		var obj Object
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("failed to decode manifests: %w", err)
		}
		if len(obj) > 0 {
			out = append(out, obj)
		}
	}
}

// Ignored labels differ between the tools and not in substance: who
// manages the objects (helm or kustomize), helm's chart label, and the
// version, which is the image tag (the overlays name :latest, the chart
// its release's tag; make release sets both).
var ignoredLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}

// kustomizeHash matches the name of a ConfigMap kustomize generated: the
// name, a dash and a ten-character content hash.
var kustomizeHash = regexp.MustCompile(`^(.+)-[a-z0-9]{10}$`)

// Normalise removes from objects what differs between a helm and a
// kustomize rendering without changing what the cluster runs: the ignored
// labels, checksum/ annotations on pod templates (helm's way to roll pods
// when settings change; kustomize renames the ConfigMap instead), the
// image tag, generated ConfigMap name hashes (and every reference to
// them), and the labels of CRDs (helm installs crds/ as written, without
// templating). It changes objects in place.
func Normalise(objs []Object) {
	hashed := map[string]string{}
	for _, o := range objs {
		if o["kind"] == "ConfigMap" {
			name, _ := get(o, "metadata", "name").(string)
			if m := kustomizeHash.FindStringSubmatch(name); m != nil {
				hashed[name] = m[1]
			}
		}
	}
	for _, o := range objs {
		replaceStrings(o, hashed)
		meta, _ := o["metadata"].(map[string]any)
		cleanMeta(meta)
		if o["kind"] == "CustomResourceDefinition" {
			delete(meta, "labels")
		}
		if tmpl, ok := get(o, "spec", "template", "metadata").(map[string]any); ok {
			cleanMeta(tmpl)
		}
		if containers, ok := get(o, "spec", "template", "spec", "containers").([]any); ok {
			for _, c := range containers {
				if c, ok := c.(map[string]any); ok {
					if image, ok := c["image"].(string); ok {
						c["image"] = imageRepository(image)
					}
				}
			}
		}
	}
}

func cleanMeta(meta map[string]any) {
	if meta == nil {
		return
	}
	if labels, ok := meta["labels"].(map[string]any); ok {
		for _, l := range ignoredLabels {
			delete(labels, l)
		}
		if len(labels) == 0 {
			delete(meta, "labels")
		}
	}
	if ann, ok := meta["annotations"].(map[string]any); ok {
		for k := range ann {
			if strings.HasPrefix(k, "checksum/") {
				delete(ann, k)
			}
		}
		if len(ann) == 0 {
			delete(meta, "annotations")
		}
	}
}

// imageRepository returns an image reference without its tag and digest.
func imageRepository(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

func replaceStrings(v any, with map[string]string) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = replaceStrings(e, with)
		}
	case []any:
		for i, e := range v {
			v[i] = replaceStrings(e, with)
		}
	case string:
		if r, ok := with[v]; ok {
			return r
		}
	}
	return v
}

func get(o map[string]any, path ...string) any {
	var v any = o
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// Key names an object: kind (with its API group), namespace and name.
func Key(o Object) string {
	group, _, _ := strings.Cut(fmt.Sprint(o["apiVersion"]), "/")
	if !strings.Contains(fmt.Sprint(o["apiVersion"]), "/") {
		group = ""
	}
	kind := fmt.Sprint(o["kind"])
	if group != "" {
		kind += "." + group
	}
	name := fmt.Sprint(get(o, "metadata", "name"))
	if ns, ok := get(o, "metadata", "namespace").(string); ok && ns != "" {
		name = ns + "/" + name
	}
	return kind + " " + name
}

// Diff compares two normalised renderings and returns one line per
// difference: an object only one side has, or a field whose values
// differ, named by its path. It returns nil when they agree.
func Diff(overlay, chart []Object) []string {
	byKey := func(objs []Object) map[string]Object {
		m := map[string]Object{}
		for _, o := range objs {
			m[Key(o)] = o
		}
		return m
	}
	a, b := byKey(overlay), byKey(chart)
	var out []string
	for _, k := range unionKeys(a, b) {
		oa, inA := a[k]
		ob, inB := b[k]
		switch {
		case !inB:
			out = append(out, fmt.Sprintf("%s: in the overlay, not in the chart", k))
		case !inA:
			out = append(out, fmt.Sprintf("%s: in the chart, not in the overlay", k))
		default:
			for _, d := range diffValue("", oa, ob) {
				out = append(out, k+": "+d)
			}
		}
	}
	return out
}

func diffValue(path string, a, b any) []string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		var out []string
		for _, k := range unionKeys(av, bv) {
			out = append(out, diffValue(join(path, k), av[k], bv[k])...)
		}
		return out
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		var out []string
		for i := range av {
			out = append(out, diffValue(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i])...)
		}
		return out
	default:
		if fmt.Sprintf("%T %v", a, a) == fmt.Sprintf("%T %v", b, b) {
			return nil
		}
	}
	return []string{fmt.Sprintf("%s: overlay %s, chart %s", path, show(a), show(b))}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func show(v any) string {
	if v == nil {
		return "(absent)"
	}
	return fmt.Sprintf("%v", v)
}

// unionKeys returns the keys of a and b, each once, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
